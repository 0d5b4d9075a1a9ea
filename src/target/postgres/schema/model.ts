/**
 * The source schema as read once from the source catalogs: everything the three target phases
 * create, already deparsed by the source's pg_get_* functions. Invariants:
 * - plain JSON (no Maps, no class instances, no bigint): it can be stored, logged and replayed;
 * - every SQL fragment was printed with search_path = '' so every name in it is schema-qualified
 *   (pg_catalog names excepted, which every session resolves first);
 * - names are raw identifiers (unquoted); whoever builds SQL quotes them with quoteIdent();
 * - lists are in creation order: types before what uses them, parent tables before partitions,
 *   views after the views they select from;
 * - omitted columns are gone from `columns`, and whatever referenced them is listed in `skipped`
 *   instead of in its own list.
 */
import type { QualifiedName } from '../../../plan/names.js';

export interface TableSelection {
  name: QualifiedName;
  /** Columns not copied (e.g. a documents content column). */
  omitColumns: string[];
  /** Columns added on the target (e.g. the blob name of a documents table), type text, nullable. */
  addColumns: Array<{ name: string; type: string }>;
}

export type Phase = 'preData' | 'postData' | 'final';

export interface Skipped {
  phase: Phase;
  /** e.g. "index public.documents_content_md5" */
  subject: string;
  reason: string;
}

export interface ExtensionDef {
  name: string;
  schema: string;
  /** Version on the source; informational (the target installs its default version). */
  version: string;
}

export interface SequenceOptions {
  /** format_type of the sequence: smallint, integer or bigint. */
  dataType: string;
  start: string;
  increment: string;
  min: string;
  max: string;
  cache: string;
  cycle: boolean;
}

export interface SequenceDef extends SequenceOptions {
  name: QualifiedName;
  unlogged: boolean;
  /** ALTER SEQUENCE ... OWNED BY, when the owning column is migrated. */
  ownedBy: { table: QualifiedName; column: string } | null;
  comment: string | null;
}

export interface DomainConstraintDef {
  name: string;
  /** pg_get_constraintdef: CHECK ((VALUE > 0)) [NOT VALID]. */
  definition: string;
  validated: boolean;
  comment: string | null;
}

export type TypeDef =
  | { kind: 'enum'; name: QualifiedName; labels: string[]; comment: string | null }
  | {
      kind: 'domain';
      name: QualifiedName;
      baseType: string;
      /** Quoted collation name when it differs from the base type's. */
      collation: string | null;
      default: string | null;
      notNull: boolean;
      constraints: DomainConstraintDef[];
      comment: string | null;
    }
  | {
      kind: 'composite';
      name: QualifiedName;
      attributes: Array<{ name: string; type: string; collation: string | null }>;
      comment: string | null;
    }
  | {
      kind: 'range';
      name: QualifiedName;
      subtype: string;
      /** Quoted, qualified operator class of the subtype. */
      opclass: string;
      collation: string | null;
      canonical: string | null;
      subtypeDiff: string | null;
      multirange: QualifiedName | null;
      comment: string | null;
    };

export interface FunctionDef {
  name: QualifiedName;
  /** pg_get_function_identity_arguments: "a integer, b public.mood". */
  identityArgs: string;
  kind: 'function' | 'procedure';
  /** pg_get_functiondef: CREATE OR REPLACE FUNCTION ... */
  definition: string;
  /** Needed by a column default, a constraint, an index or a type: created in phase 1. */
  early: boolean;
  comment: string | null;
}

/** Either a type or an early function, in one dependency order for phase 1. */
export type PreDataObject = { type: TypeDef } | { function: FunctionDef };

export interface ColumnDef {
  name: string;
  /** format_type(atttypid, atttypmod), e.g. numeric(30,10), public.mood[]. */
  type: string;
  /** Quoted collation when it differs from the type's default collation, e.g. pg_catalog."C". */
  collation: string | null;
  /** pg_get_expr of the default; null for generated and identity columns. */
  default: string | null;
  notNull: boolean;
  identity: { kind: 'always' | 'by default'; sequence: QualifiedName; options: SequenceOptions } | null;
  /** Generation expression of a GENERATED ALWAYS AS (...) STORED column. */
  generated: string | null;
  statistics: number | null;
  /** attstorage when it differs from the type's: p, e, m or x. */
  storage: string | null;
  /** attcompression: p (pglz) or l (lz4); null for the default. */
  compression: string | null;
  /** attoptions: n_distinct=... */
  options: string[];
  comment: string | null;
}

export interface ConstraintDef {
  name: string;
  table: QualifiedName;
  /** c check, p primary key, u unique, x exclusion, f foreign key. */
  type: 'c' | 'p' | 'u' | 'x' | 'f';
  /** pg_get_constraintdef(oid). */
  definition: string;
  validated: boolean;
  /** Referenced table of a foreign key. */
  references: QualifiedName | null;
  /** The table is partitioned: ALTER TABLE ONLY is refused and NOT VALID foreign keys too (before 18). */
  onPartitioned: boolean;
  /** Copies PostgreSQL makes on partitions (or for referenced partitions), renamed to their source names. */
  clones: CloneDef[];
  comment: string | null;
}

export interface CloneDef {
  table: QualifiedName;
  name: string;
  parentTable: QualifiedName;
  parentName: string;
  /** For a foreign key copy: the (partition of the) referenced table it points at. */
  references: QualifiedName | null;
}

export interface TableDef {
  name: QualifiedName;
  partitioned: boolean;
  unlogged: boolean;
  /** pg_get_partkeydef: RANGE (at). */
  partitionKey: string | null;
  /** Set when the table is a partition of a migrated table. */
  partitionOf: { parent: QualifiedName; bound: string } | null;
  /** Kept source columns in order (omitted ones removed). */
  columns: ColumnDef[];
  addColumns: Array<{ name: string; type: string }>;
  /** CHECK constraints and the PRIMARY KEY created with the table (not inherited ones). */
  constraints: ConstraintDef[];
  reloptions: string[];
  toastOptions: string[];
  /** Table access method when not heap. */
  accessMethod: string | null;
  /** f full, n nothing (set in phase 1); i index (set in phase 2 with the index); d default. */
  replicaIdentity: 'd' | 'n' | 'f' | 'i';
  rowSecurity: boolean;
  forceRowSecurity: boolean;
  /** Source size in bytes (largest first in phase 2). */
  bytes: number;
  comment: string | null;
}

export interface IndexDef {
  name: QualifiedName;
  table: QualifiedName;
  /** pg_get_indexdef(oid): CREATE [UNIQUE] INDEX name ON [ONLY] schema.table USING ... */
  definition: string;
  /** Indexes of partitions attached to this (partitioned) index, deepest first. */
  children: Array<{ name: QualifiedName; table: QualifiedName; definition: string; parent: QualifiedName }>;
  clustered: boolean;
  replicaIdentity: boolean;
  comment: string | null;
}

export interface StatisticsDef {
  name: QualifiedName;
  table: QualifiedName;
  definition: string;
}

export interface ViewDef {
  name: QualifiedName;
  materialized: boolean;
  /** pg_get_viewdef(oid): the SELECT. */
  definition: string;
  options: string[];
  /** Indexes of a materialized view. */
  indexes: Array<{ name: QualifiedName; definition: string }>;
  comment: string | null;
}

export interface TriggerDef {
  name: string;
  table: QualifiedName;
  /** pg_get_triggerdef(oid): CREATE TRIGGER ... */
  definition: string;
  /** tgenabled: O origin (default), D disabled, R replica, A always. */
  enabled: 'O' | 'D' | 'R' | 'A';
  comment: string | null;
}

export interface PolicyDef {
  name: string;
  table: QualifiedName;
  permissive: boolean;
  /** ALL, SELECT, INSERT, UPDATE or DELETE. */
  command: string;
  using: string | null;
  withCheck: string | null;
}

export interface SourceSchema {
  format: 1;
  /** server_version_num of the source. */
  sourceVersion: number;
  selections: TableSelection[];
  schemas: string[];
  extensions: ExtensionDef[];
  preDataObjects: PreDataObject[];
  sequences: SequenceDef[];
  /** Parents before their partitions. */
  tables: TableDef[];
  indexes: IndexDef[];
  /** UNIQUE, EXCLUDE and FOREIGN KEY constraints (phase 2). */
  constraints: ConstraintDef[];
  statistics: StatisticsDef[];
  /** CLUSTER ON / REPLICA IDENTITY USING INDEX on the indexes of constraints (phase 2). */
  constraintIndexSettings: IndexDef[];
  /** Functions created in phase 3 (early ones are in preDataObjects). */
  functions: FunctionDef[];
  /** In dependency order. */
  views: ViewDef[];
  triggers: TriggerDef[];
  policies: PolicyDef[];
  skipped: Skipped[];
}
