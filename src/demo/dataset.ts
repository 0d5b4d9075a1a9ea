/**
 * A synthetic hospital record for the demo, the benchmark and the tests: the schema of
 * tests/fixtures/hospital.sql (an enum, a domain, identity and serial keys, a generated column,
 * foreign keys, an index), with a few more free-text columns so rows have realistic widths,
 * filled server-side with `generate_series`.
 *
 * Invariants:
 * - deterministic: the same options give the same rows, byte for byte, in the same physical
 *   order (every "random" value is `hashint8extended(row number, salt)`, a hash PostgreSQL keeps
 *   stable because hash partitioning depends on it; no random(), no now(), TimeZone pinned), so
 *   benchmark runs are comparable. Large object OIDs are the one exception: the server assigns
 *   them;
 * - no row goes through JavaScript: each table is one INSERT … SELECT;
 * - all or nothing: everything but the final VACUUM (ANALYZE) runs in one transaction;
 * - keys are explicit (id = row number), sequences are set past them afterwards, and foreign keys
 *   and secondary indexes are added after loading (one validation pass instead of a trigger per row).
 */
import type pg from 'pg';
import { formatBytes, formatCount } from '../preflight/format.js';

export interface DocumentSpec {
  count: number;
  totalBytes: number;
  maxBytes: number;
}

export interface DatasetOptions {
  /** 1 = about 1,000,000 observation rows and ~300 MB of table data; fractional scales are fine. */
  scale: number;
  /** Documents (bytea), sizes skewed between 1 KiB and maxBytes, summing to totalBytes. */
  documents?: DocumentSpec | null;
  /** Also a `scans` table whose images are large objects (oid column, lo_from_bytea). */
  largeObjects?: boolean;
}

export interface DatasetResult {
  /** Rows per table, by unqualified table name. */
  rows: Record<string, number>;
  /**
   * On-disk size of the tables created (pg_total_relation_size: heap, TOAST and indexes) plus,
   * with `largeObjects`, the bytes of the large objects.
   */
  bytes: number;
}

/** Rows per record table at scale 1. */
export const BASE_ROWS = { patients: 50_000, encounters: 200_000, observations: 1_000_000, medications: 250_000 } as const;
export type RecordTable = keyof typeof BASE_ROWS;

/** NHS numbers come from the range reserved for testing (999 000 0000 – 999 999 9999). */
const MAX_PATIENTS = 10_000_000;
export const MAX_SCALE = MAX_PATIENTS / BASE_ROWS.patients;
export const MIN_DOCUMENT_BYTES = 1024;

/** Default large objects when `largeObjects` is set without `documents`. */
const DEFAULT_SCANS: DocumentSpec = { count: 10, totalBytes: 160 * 1024, maxBytes: 64 * 1024 };

/** Row counts of the record tables at `scale` (at least one row each). */
export function datasetRowCounts(scale: number): Record<RecordTable, number> {
  checkScale(scale);
  const count = (base: number): number => Math.max(1, Math.round(base * scale));
  return {
    patients: count(BASE_ROWS.patients),
    encounters: count(BASE_ROWS.encounters),
    observations: count(BASE_ROWS.observations),
    medications: count(BASE_ROWS.medications),
  };
}

function checkScale(scale: number): void {
  if (!Number.isFinite(scale) || scale <= 0 || scale > MAX_SCALE) {
    throw new Error(`dataset scale must be a number above 0 and at most ${MAX_SCALE}, got ${scale}`);
  }
}

/**
 * Document sizes: `count` sizes between 1 KiB and `maxBytes` summing exactly to `totalBytes`,
 * most small and a few large, in a fixed shuffled order. Pure and deterministic.
 *
 * The i-th smallest size is the truncated Pareto quantile at q = (i + 0.5) / count, between
 * 1 KiB and maxBytes: with α ≈ 1, half the documents are under about 2 KiB and the largest is
 * near maxBytes. α is found by bisection so the mean matches `totalBytes / count` (α → 0 is
 * log-uniform, α = −1 uniform); rounding is then corrected so the sum is exact.
 */
export function documentSizes(count: number, totalBytes: number, maxBytes: number): number[] {
  if (!Number.isInteger(count) || count < 0) throw new Error(`document count must be a whole number ≥ 0, got ${count}`);
  if (count === 0) return [];
  if (!Number.isInteger(maxBytes) || maxBytes < MIN_DOCUMENT_BYTES || maxBytes > 256 * 1024 * 1024) {
    throw new Error(`document maxBytes must be a whole number of bytes from ${MIN_DOCUMENT_BYTES} to 256 MiB, got ${maxBytes}`);
  }
  if (!Number.isInteger(totalBytes) || totalBytes < count * MIN_DOCUMENT_BYTES || totalBytes > count * maxBytes) {
    throw new Error(
      `document totalBytes must be from count × ${MIN_DOCUMENT_BYTES} to count × maxBytes (${count * MIN_DOCUMENT_BYTES}–${count * maxBytes}), got ${totalBytes}`,
    );
  }
  const quantiles = Array.from({ length: count }, (_, i) => (i + 0.5) / count);
  const ratio = maxBytes / MIN_DOCUMENT_BYTES;
  const shape = (alpha: number): number[] =>
    quantiles.map((q) =>
      Math.min(
        maxBytes,
        Math.abs(alpha) < 1e-9 ? MIN_DOCUMENT_BYTES * ratio ** q : MIN_DOCUMENT_BYTES * (1 - q * (1 - ratio ** -alpha)) ** (-1 / alpha),
      ),
    );
  const mean = (alpha: number): number => shape(alpha).reduce((x, y) => x + y, 0) / count;
  // mean(α) falls from about maxBytes (α very negative) to about 1 KiB (α large).
  let lo = -40;
  let hi = 40;
  for (let i = 0; i < 100; i++) {
    const mid = (lo + hi) / 2;
    if (mean(mid) > totalBytes / count) lo = mid;
    else hi = mid;
  }
  const raw = shape((lo + hi) / 2);

  // Exact total: scale the part above 1 KiB, cap at maxBytes, hand out what rounding left over.
  const extra = totalBytes - count * MIN_DOCUMENT_BYTES;
  const rawExtra = raw.reduce((x, y) => x + y - MIN_DOCUMENT_BYTES, 0);
  const sizes = raw.map((r) =>
    Math.min(maxBytes, MIN_DOCUMENT_BYTES + Math.floor(rawExtra > 0 ? ((r - MIN_DOCUMENT_BYTES) * extra) / rawExtra : extra / count)),
  );
  let left = totalBytes - sizes.reduce((x, y) => x + y, 0);
  for (let i = count - 1; left > 0; i = i === 0 ? count - 1 : i - 1) {
    const room = Math.min(maxBytes - (sizes[i] ?? maxBytes), left);
    sizes[i] = (sizes[i] ?? 0) + room;
    left -= room;
  }
  // Fixed shuffle (Fisher–Yates with mulberry32), so large documents are not all at the end.
  let seed = 0x5eed1234;
  const next = (): number => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [sizes[i], sizes[j]] = [sizes[j] ?? 0, sizes[i] ?? 0];
  }
  return sizes;
}

/* ------------------------------------------------------------------------- */
/* vocabulary                                                                */
/* ------------------------------------------------------------------------- */

const FAMILY_NAMES = [
  'Smith', 'Jones', 'Taylor', 'Brown', 'Williams', 'Wilson', 'Johnson', 'Davies', 'Patel', 'Robinson',
  'Wright', 'Thompson', 'Evans', 'Walker', 'White', 'Roberts', 'Green', 'Hall', 'Thomas', 'Clarke',
  'Jackson', 'Wood', 'Harris', 'Edwards', 'Turner', 'Martin', 'Cooper', 'Hill', 'Ward', 'Hughes',
  'Moore', 'Clark', 'King', 'Harrison', 'Lewis', 'Baker', 'Lee', 'Allen', 'Morris', 'Khan',
  'Scott', 'Watson', 'Davis', 'Parker', 'James', 'Bennett', 'Young', 'Phillips', 'Richardson', 'Mitchell',
  'Bailey', 'Carter', 'Cook', 'Singh', 'Shaw', 'Bell', 'Collins', 'Morgan', 'Kelly', 'Begum',
  'Miller', 'Cox', 'Hussain', 'Marshall', 'Simpson', 'Price', 'Anderson', 'Adams', 'Wilkinson', 'Ali',
  'Okafor', 'Nowak', 'Murphy', 'Campbell', 'Chen', 'Kaur', 'Ahmed', 'Mensah', 'Kowalski', "O'Brien",
]; // prettier-ignore

const FEMALE_NAMES = [
  'Olivia', 'Amelia', 'Isla', 'Ava', 'Mia', 'Ivy', 'Lily', 'Isabella', 'Sophia', 'Grace',
  'Margaret', 'Susan', 'Patricia', 'Elizabeth', 'Mary', 'Jean', 'Sarah', 'Karen', 'Helen', 'Joan',
  'Aisha', 'Fatima', 'Priya', 'Zofia', 'Chloe', 'Emily', 'Hannah', 'Ruth', 'Dorothy', 'Anne',
]; // prettier-ignore

const MALE_NAMES = [
  'Oliver', 'George', 'Noah', 'Arthur', 'Harry', 'Leo', 'Muhammad', 'Jack', 'Charlie', 'Oscar',
  'John', 'David', 'Michael', 'Peter', 'Robert', 'James', 'William', 'Richard', 'Paul', 'Thomas',
  'Ahmed', 'Raj', 'Kwame', 'Piotr', 'Daniel', 'Samuel', 'Joseph', 'Kenneth', 'Brian', 'Alan',
]; // prettier-ignore

const WARDS = [
  'Emergency Department', 'Acute Medical Unit', 'Ward 3 - General Surgery', 'Ward 5 - Stroke Unit',
  'Ward 7 - Cardiology', 'Ward 9 - Respiratory', 'Ward 12 - Elderly Care', 'Ward 14 - Orthopaedics',
  'Ward 21 - Maternity', 'Ward 22 - Paediatrics', 'Critical Care Unit', 'Day Surgery Unit',
]; // prettier-ignore

const REASONS = [
  'Chest pain', 'Shortness of breath', 'Fall at home', 'Abdominal pain', 'Fever and confusion',
  'Elective hip replacement', 'Elective knee replacement', 'Cellulitis of lower leg', 'Syncope',
  'Exacerbation of COPD', 'Suspected stroke', 'Urinary tract infection', 'Diabetic ketoacidosis',
  'Community-acquired pneumonia', 'Heart failure, decompensated', 'Planned cholecystectomy',
  'Fractured neck of femur', 'Asthma attack', 'Gastrointestinal bleed', 'Induction of labour',
]; // prettier-ignore

/** Observation codes: code, unit, low, high, decimals (code `bmi` feeds the generated column). */
const OBSERVATIONS: ReadonlyArray<readonly [string, string, number, number, number]> = [
  ['heart_rate', 'bpm', 48, 130, 0],
  ['bp_systolic', 'mmHg', 90, 180, 0],
  ['bp_diastolic', 'mmHg', 50, 110, 0],
  ['resp_rate', '/min', 10, 30, 0],
  ['spo2', '%', 88, 100, 0],
  ['temperature', 'Cel', 35.5, 39.5, 1],
  ['bmi', 'kg/m2', 16, 42, 1],
  ['weight', 'kg', 40, 140, 1],
  ['glucose', 'mmol/L', 3.5, 15, 1],
  ['pain_score', '{score}', 0, 10, 0],
];

const ROLES = ['RN', 'HCA', 'FY1', 'SHO', 'RM', 'Physio', 'ANP'];

const NOTE_OPENINGS = [
  'Patient comfortable at rest', 'Alert and orientated', 'Drowsy but rousable to voice', 'Reports mild pain',
  'Sitting out in chair', 'Asleep, not disturbed', 'Mobilising with a frame', 'Anxious, reassured',
]; // prettier-ignore

const NOTE_FINDINGS = [
  'observations within normal limits', 'NEWS2 score 1, no escalation needed', 'repeat observations in 4 hours',
  'escalated to the nurse in charge', 'fluid balance chart updated', 'oxygen via nasal cannula at 2 L/min',
  'analgesia given as prescribed', 'family updated by phone',
]; // prettier-ignore

const NOTE_CONTEXT = [
  'Seen with family present.', 'Interpreter used (Polish).', 'Call bell within reach.', 'Bed rails in place, risk assessed.',
  'Pressure areas checked, skin intact.', 'Hourly rounding in place.', 'Nil by mouth from midnight.', 'Cannula site clean, no redness.',
]; // prettier-ignore

const NOTE_PLANS = [
  'Plan: continue current management.', 'Plan: review on the consultant ward round.', 'Plan: recheck after the next dose.',
  'Plan: encourage oral fluids.', 'Plan: refer to physiotherapy.', 'Plan: discharge planning started.',
]; // prettier-ignore

/** Drug, dose, route, instructions. */
const DRUGS: ReadonlyArray<readonly [string, string, string, string]> = [
  ['Paracetamol', '1 g', 'oral', 'Four times a day; no more than 4 g in 24 hours'],
  ['Ibuprofen', '400 mg', 'oral', 'Three times a day with or after food'],
  ['Amoxicillin', '500 mg', 'oral', 'Three times a day for 7 days'],
  ['Co-amoxiclav', '625 mg', 'oral', 'Three times a day for 5 days'],
  ['Metformin', '500 mg', 'oral', 'Twice a day with meals'],
  ['Atorvastatin', '20 mg', 'oral', 'Once a day at night'],
  ['Amlodipine', '5 mg', 'oral', 'Once a day in the morning'],
  ['Ramipril', '2.5 mg', 'oral', 'Once a day; check kidney function in 2 weeks'],
  ['Bisoprolol', '2.5 mg', 'oral', 'Once a day in the morning'],
  ['Omeprazole', '20 mg', 'oral', 'Once a day before breakfast'],
  ['Levothyroxine', '50 micrograms', 'oral', 'Once a day, 30 minutes before breakfast'],
  ['Salbutamol', '100 micrograms', 'inhaled', 'Two puffs when required for breathlessness'],
  ['Enoxaparin', '40 mg', 'subcutaneous', 'Once a day while in hospital'],
  ['Morphine sulfate', '10 mg', 'oral', 'Every 4 hours when required for pain'],
  ['Furosemide', '40 mg', 'oral', 'Once a day in the morning; weigh daily'],
  ['Sertraline', '50 mg', 'oral', 'Once a day'],
  ['Gentamicin', '5 mg/kg', 'intravenous', 'Once a day; levels before the second dose'],
  ['Insulin glargine', '10 units', 'subcutaneous', 'Once a day at the same time'],
  ['Prednisolone', '30 mg', 'oral', 'Once a day in the morning for 5 days'],
  ['Clopidogrel', '75 mg', 'oral', 'Once a day'],
  ['Apixaban', '5 mg', 'oral', 'Twice a day'],
  ['Cefuroxime', '750 mg', 'intravenous', 'Three times a day; review at 48 hours'],
  ['Ondansetron', '4 mg', 'intravenous', 'Every 8 hours when required for nausea'],
  ['Lactulose', '15 mL', 'oral', 'Twice a day; adjust to response'],
];

const DOCUMENT_KINDS = ['letter', 'discharge_summary', 'referral', 'lab_report', 'consent_form', 'clinic_letter'];
const MODALITIES = ['CT', 'MR', 'XR', 'US', 'NM'];

/* ------------------------------------------------------------------------- */
/* SQL                                                                       */
/* ------------------------------------------------------------------------- */

const SCHEMA = `
CREATE TYPE public.sex AS ENUM ('female', 'male', 'unknown');
CREATE DOMAIN public.nhs_number AS text CHECK (VALUE ~ '^[0-9]{10}$');

CREATE TABLE public.patients (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  nhs_number public.nhs_number NOT NULL UNIQUE,
  family_name text NOT NULL,
  given_name text NOT NULL,
  born date NOT NULL,
  sex public.sex NOT NULL DEFAULT 'unknown',
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.encounters (
  id bigserial PRIMARY KEY,
  patient_id bigint NOT NULL,
  started_at timestamptz NOT NULL,
  ended_at timestamptz,
  ward text,
  reason text,
  CHECK (ended_at IS NULL OR ended_at >= started_at)
);

CREATE TABLE public.observations (
  id bigserial PRIMARY KEY,
  encounter_id bigint NOT NULL,
  code text NOT NULL,
  value numeric(12, 4),
  unit text,
  observed_at timestamptz NOT NULL,
  bmi numeric GENERATED ALWAYS AS (CASE WHEN code = 'bmi' THEN value END) STORED,
  performer text,
  note text
);

CREATE TABLE public.medications (
  patient_id bigint NOT NULL,
  prescribed_at timestamptz NOT NULL,
  drug text NOT NULL,
  dose text,
  route text,
  instructions text,
  PRIMARY KEY (patient_id, prescribed_at, drug)
);
`;

/**
 * Session helpers in pg_temp (never part of the migrated schema; dropped before COMMIT):
 * u(n, salt): uniform in [0, 1) from the row number; pick(array, u): an element;
 * encounter_start/encounter_length: an encounter's times from its id alone, so observations can
 * fall inside their encounter without a join.
 */
const HELPERS = `
CREATE FUNCTION pg_temp.u(n bigint, salt bigint) RETURNS double precision
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT ((hashint8extended(n, salt) >> 11) & 9007199254740991)::double precision / 9007199254740992.0 $$;
CREATE FUNCTION pg_temp.pick(items text[], x double precision) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT items[1 + floor(x * cardinality(items))::int] $$;
CREATE FUNCTION pg_temp.encounter_start(e bigint, n bigint) RETURNS timestamptz
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT timestamptz '2019-01-01 00:00:00+00' + ((e - 1 + pg_temp.u(e, 21)) / n) * interval '189302400 seconds' $$;
CREATE FUNCTION pg_temp.encounter_length(e bigint) RETURNS interval
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT interval '20 minutes' + pg_temp.u(e, 22) ^ 4 * interval '21 days' $$;
`;

const DROP_HELPERS = `
DROP FUNCTION pg_temp.encounter_length(bigint);
DROP FUNCTION pg_temp.encounter_start(bigint, bigint);
DROP FUNCTION pg_temp.pick(text[], double precision);
DROP FUNCTION pg_temp.u(bigint, bigint);
`;

// $1 patients, $2 family names, $3 female names, $4 male names
const INSERT_PATIENTS = `
INSERT INTO public.patients (id, nhs_number, family_name, given_name, born, sex, created_at)
SELECT g,
       '999' || lpad(((g * 7919) % 10000000)::text, 7, '0'),
       pg_temp.pick($2::text[], pg_temp.u(g, 2)),
       CASE WHEN sex = 'male' THEN pg_temp.pick($4::text[], pg_temp.u(g, 3))
            WHEN sex = 'female' THEN pg_temp.pick($3::text[], pg_temp.u(g, 3))
            ELSE pg_temp.pick($3::text[] || $4::text[], pg_temp.u(g, 3)) END,
       date '1925-01-01' + floor(pg_temp.u(g, 4) ^ 1.3 * 33000)::int,
       sex,
       timestamptz '2012-01-01 00:00:00+00' + ((g - 1 + pg_temp.u(g, 5)) / $1::bigint) * interval '378691200 seconds'
  FROM (SELECT g, CASE WHEN pg_temp.u(g, 1) < 0.505 THEN 'female'
                       WHEN pg_temp.u(g, 1) < 0.99 THEN 'male'
                       ELSE 'unknown' END::public.sex AS sex
          FROM generate_series(1::bigint, $1::bigint) g) s`;

// $1 encounters, $2 patients, $3 wards, $4 reasons
const INSERT_ENCOUNTERS = `
INSERT INTO public.encounters (id, patient_id, started_at, ended_at, ward, reason)
SELECT g,
       1 + floor(pg_temp.u(g, 20) * $2::bigint)::bigint,
       pg_temp.encounter_start(g, $1::bigint),
       CASE WHEN pg_temp.u(g, 23) < 0.02 THEN NULL ELSE pg_temp.encounter_start(g, $1::bigint) + pg_temp.encounter_length(g) END,
       pg_temp.pick($3::text[], pg_temp.u(g, 24)),
       CASE WHEN pg_temp.u(g, 25) < 0.05 THEN NULL ELSE pg_temp.pick($4::text[], pg_temp.u(g, 26)) END
  FROM generate_series(1::bigint, $1::bigint) g`;

// $1 observations, $2 encounters, $3 codes, $4 units, $5 lows, $6 highs, $7 decimals,
// $8 family names, $9 given names, $10 roles, $11..$14 note parts
const INSERT_OBSERVATIONS = `
INSERT INTO public.observations (id, encounter_id, code, value, unit, observed_at, performer, note)
SELECT g, e, ($3::text[])[k],
       round((($5::float8[])[k] + (($6::float8[])[k] - ($5::float8[])[k]) * pg_temp.u(g, 33))::numeric, ($7::int[])[k]),
       ($4::text[])[k],
       pg_temp.encounter_start(e, $2::bigint)
         + pg_temp.u(g, 34) * CASE WHEN pg_temp.u(e, 23) < 0.02 THEN interval '12 hours' ELSE pg_temp.encounter_length(e) END,
       left(pg_temp.pick($9::text[], pg_temp.u(g, 35)), 1) || '. ' || pg_temp.pick($8::text[], pg_temp.u(g, 36))
         || ' (' || pg_temp.pick($10::text[], pg_temp.u(g, 37)) || ')',
       CASE WHEN pg_temp.u(g, 38) < 0.15 THEN NULL
            ELSE pg_temp.pick($11::text[], pg_temp.u(g, 39)) || '; ' || pg_temp.pick($12::text[], pg_temp.u(g, 40)) || '. '
                 || CASE WHEN pg_temp.u(g, 42) < 0.2 THEN '' ELSE pg_temp.pick($14::text[], pg_temp.u(g, 43)) || ' ' END
                 || pg_temp.pick($13::text[], pg_temp.u(g, 41)) END
  FROM (SELECT g,
               1 + floor(pg_temp.u(g, 31) * $2::bigint)::bigint AS e,
               1 + floor(pg_temp.u(g, 32) * cardinality($3::text[]))::int AS k
          FROM generate_series(1::bigint, $1::bigint) g) s`;

// $1 medications, $2 patients, $3 drugs, $4 doses, $5 routes, $6 instructions.
// prescribed_at grows strictly with g, so the primary key is unique by construction.
const INSERT_MEDICATIONS = `
INSERT INTO public.medications (patient_id, prescribed_at, drug, dose, route, instructions)
SELECT 1 + floor(pg_temp.u(g, 50) * $2::bigint)::bigint,
       timestamptz '2019-01-01 00:00:00+00' + ((g - 1 + 0.9 * pg_temp.u(g, 51)) / $1::bigint) * interval '189302400 seconds',
       ($3::text[])[k], ($4::text[])[k], ($5::text[])[k],
       CASE WHEN pg_temp.u(g, 52) < 0.1 THEN NULL ELSE ($6::text[])[k] END
  FROM (SELECT g, 1 + floor(pg_temp.u(g, 53) * cardinality($3::text[]))::int AS k
          FROM generate_series(1::bigint, $1::bigint) g) s`;

const CONSTRAINTS = `
ALTER TABLE public.encounters ADD CONSTRAINT encounters_patient_id_fkey FOREIGN KEY (patient_id) REFERENCES public.patients (id);
ALTER TABLE public.observations ADD CONSTRAINT observations_encounter_id_fkey FOREIGN KEY (encounter_id) REFERENCES public.encounters (id);
ALTER TABLE public.medications ADD CONSTRAINT medications_patient_id_fkey FOREIGN KEY (patient_id) REFERENCES public.patients (id);
CREATE INDEX encounters_patient ON public.encounters (patient_id);
`;

/**
 * Incompressible filler for documents: 1 MiB of chained SHA-256 output. Documents are slices of
 * it at different offsets behind a unique header, so they differ, and TOAST compression (whose
 * history window is far smaller than 1 MiB) gains nothing, as with real PDFs and images.
 */
const POOL_BYTES = 1024 * 1024;
const CREATE_POOL = `
CREATE TEMPORARY TABLE cs_dataset_pool ON COMMIT DROP AS
SELECT string_agg(sha256(int8send(i)), ''::bytea ORDER BY i) AS b FROM generate_series(1, ${POOL_BYTES / 32}) i`;

/** Bytes of document `n` (a column expression over `n` and `size`). */
function contentSql(label: string): string {
  return `substring(
    convert_to('%PDF-1.7' || chr(10) || '%cloudshift ${label} ' || n || chr(10), 'UTF8')
      || substring((SELECT string_agg(p.b, ''::bytea) FROM cs_dataset_pool p, generate_series(0, (size + 65536) / ${POOL_BYTES}))
                   FROM (1 + (n * 7919) % 65536)::int)
    FROM 1 FOR size)`;
}

const CREATE_DOCUMENTS = `
CREATE TABLE public.documents (
  id bigserial PRIMARY KEY,
  patient_id bigint NOT NULL REFERENCES public.patients (id),
  filename text NOT NULL,
  mime_type text NOT NULL DEFAULT 'application/pdf',
  kind text NOT NULL DEFAULT 'letter',
  content bytea NOT NULL
)`;

// $1 sizes, $2 patients, $3 kinds
const INSERT_DOCUMENTS = `
INSERT INTO public.documents (id, patient_id, filename, mime_type, kind, content)
SELECT n, 1 + floor(pg_temp.u(n, 60) * $2::bigint)::bigint,
       replace(kind, '_', '-') || '-' || n || '.pdf', 'application/pdf', kind,
       ${contentSql('document')}
  FROM (SELECT n, size, pg_temp.pick($3::text[], pg_temp.u(n, 61)) AS kind
          FROM unnest($1::int[]) WITH ORDINALITY AS d(size, n)) s`;

const CREATE_SCANS = `
CREATE TABLE public.scans (
  id bigserial PRIMARY KEY,
  patient_id bigint NOT NULL REFERENCES public.patients (id),
  taken_at timestamptz NOT NULL,
  modality text NOT NULL,
  filename text NOT NULL,
  mime_type text NOT NULL DEFAULT 'application/dicom',
  image oid NOT NULL
)`;

// $1 sizes, $2 patients, $3 modalities
const INSERT_SCANS = `
INSERT INTO public.scans (id, patient_id, taken_at, modality, filename, mime_type, image)
SELECT n, 1 + floor(pg_temp.u(n, 70) * $2::bigint)::bigint,
       timestamptz '2019-01-01 00:00:00+00' + pg_temp.u(n, 71) * interval '189302400 seconds',
       modality, lower(modality) || '-' || n || '.dcm', 'application/dicom',
       lo_from_bytea(0, ${contentSql('scan')})
  FROM (SELECT n, size, pg_temp.pick($3::text[], pg_temp.u(n, 72)) AS modality
          FROM unnest($1::int[]) WITH ORDINALITY AS d(size, n)) s`;

/* ------------------------------------------------------------------------- */
/* entry point                                                               */
/* ------------------------------------------------------------------------- */

/** One column of a table of vocabulary, as an array parameter. */
const column = <T>(rows: ReadonlyArray<readonly T[]>, index: number): T[] => rows.map((row) => row[index] as T);

/**
 * Creates the hospital schema in the database `client` is connected to (it must not have these
 * tables or types yet) and fills it. Returns rows per table and the bytes it occupies.
 */
export async function createHospitalDataset(
  client: pg.Client,
  options: DatasetOptions,
  onProgress?: (msg: string) => void,
): Promise<DatasetResult> {
  const counts = datasetRowCounts(options.scale);
  const docSizes = options.documents
    ? documentSizes(options.documents.count, options.documents.totalBytes, options.documents.maxBytes)
    : null;
  const scanSpec = options.largeObjects ? (options.documents ? scansLike(options.documents) : DEFAULT_SCANS) : null;
  const scanSizes = scanSpec ? documentSizes(scanSpec.count, scanSpec.totalBytes, scanSpec.maxBytes) : null;
  const tables = [
    'patients',
    'encounters',
    'observations',
    'medications',
    ...(docSizes ? ['documents'] : []),
    ...(scanSizes ? ['scans'] : []),
  ];

  const existing = await client.query<{ name: string }>(
    `SELECT name FROM unnest($1::text[]) AS name WHERE to_regclass(name) IS NOT NULL OR to_regtype(name) IS NOT NULL`,
    [[...tables.map((t) => `public.${t}`), 'public.sex', 'public.nhs_number']],
  );
  if (existing.rows.length > 0) {
    throw new Error(
      `the database already has ${existing.rows.map((r) => r.name).join(', ')}: the hospital dataset needs a database without them`,
    );
  }

  const rows: Record<string, number> = {};
  const step = async (table: string, text: string, params: unknown[]): Promise<void> => {
    const t0 = performance.now();
    const result = await client.query(text, params);
    rows[table] = result.rowCount ?? 0;
    onProgress?.(`${table}: ${formatCount(rows[table] ?? 0)} rows in ${seconds(t0)}`);
  };

  const started = performance.now();
  await client.query('BEGIN');
  try {
    // Deterministic and fast: UTC arithmetic, no statement timeout, memory for the FK checks.
    await client.query(`SET LOCAL TimeZone = 'UTC'`);
    await client.query('SET LOCAL statement_timeout = 0');
    await client.query('SET LOCAL synchronous_commit = off');
    await client.query(`SET LOCAL maintenance_work_mem = '256MB'`);
    await client.query(`SET LOCAL work_mem = '64MB'`);
    await client.query(SCHEMA);
    await client.query(HELPERS);
    const given = [...FEMALE_NAMES, ...MALE_NAMES];
    await step('patients', INSERT_PATIENTS, [counts.patients, FAMILY_NAMES, FEMALE_NAMES, MALE_NAMES]);
    await step('encounters', INSERT_ENCOUNTERS, [counts.encounters, counts.patients, WARDS, REASONS]);
    await step('observations', INSERT_OBSERVATIONS, [
      counts.observations,
      counts.encounters,
      column(OBSERVATIONS, 0),
      column(OBSERVATIONS, 1),
      column(OBSERVATIONS, 2),
      column(OBSERVATIONS, 3),
      column(OBSERVATIONS, 4),
      FAMILY_NAMES,
      given,
      ROLES,
      NOTE_OPENINGS,
      NOTE_FINDINGS,
      NOTE_PLANS,
      NOTE_CONTEXT,
    ]);
    await step('medications', INSERT_MEDICATIONS, [
      counts.medications,
      counts.patients,
      column(DRUGS, 0),
      column(DRUGS, 1),
      column(DRUGS, 2),
      column(DRUGS, 3),
    ]);
    const constraintsStarted = performance.now();
    await client.query(CONSTRAINTS);
    onProgress?.(`foreign keys and indexes in ${seconds(constraintsStarted)}`);

    if (docSizes !== null || scanSizes !== null) await client.query(CREATE_POOL);
    if (docSizes !== null) {
      await client.query(CREATE_DOCUMENTS);
      await step('documents', INSERT_DOCUMENTS, [docSizes, counts.patients, DOCUMENT_KINDS]);
    }
    if (scanSizes !== null) {
      await client.query(CREATE_SCANS);
      await step('scans', INSERT_SCANS, [scanSizes, counts.patients, MODALITIES]);
    }

    // Sequences past the explicit keys, as if the rows had been inserted by the application.
    for (const table of tables.filter((t) => t !== 'medications')) {
      if ((rows[table] ?? 0) > 0)
        await client.query(`SELECT setval(pg_get_serial_sequence($1, 'id'), $2)`, [`public.${table}`, rows[table]]);
    }
    await client.query(DROP_HELPERS);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }

  // Statistics, hint bits and the visibility map, so every later reader sees the same pages.
  const t0 = performance.now();
  await client.query(`VACUUM (ANALYZE) ${tables.map((t) => `public.${t}`).join(', ')}`);
  onProgress?.(`vacuum and analyze in ${seconds(t0)}`);

  const size = await client.query<{ bytes: string }>(
    `SELECT sum(pg_total_relation_size(('public.' || t)::regclass))::text AS bytes FROM unnest($1::text[]) AS t`,
    [tables],
  );
  const largeObjects =
    scanSizes === null
      ? null
      : await client.query<{ bytes: string }>(`SELECT coalesce(sum(octet_length(lo_get(image))), 0)::text AS bytes FROM public.scans`);
  const bytes = Number(size.rows[0]?.bytes ?? 0) + Number(largeObjects?.rows[0]?.bytes ?? 0);
  onProgress?.(`${formatBytes(bytes)} of tables in ${seconds(started)}`);
  return { rows, bytes };
}

/** Large objects alongside documents: a quarter as many (at least 5), from the same distribution. */
function scansLike(documents: DocumentSpec): DocumentSpec {
  const count = Math.max(5, Math.round(documents.count / 4));
  const mean = documents.count > 0 ? documents.totalBytes / documents.count : MIN_DOCUMENT_BYTES;
  const maxBytes = Math.max(MIN_DOCUMENT_BYTES, documents.maxBytes);
  return { count, totalBytes: Math.min(count * maxBytes, Math.max(count * MIN_DOCUMENT_BYTES, Math.round(count * mean))), maxBytes };
}

function seconds(since: number): string {
  return `${((performance.now() - since) / 1000).toFixed(1)} s`;
}
