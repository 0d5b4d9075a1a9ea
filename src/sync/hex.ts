/**
 * bytea's text form (`\x` and two hex digits a byte) decoded from its UTF-8 bytes a block at a
 * time: a document's hex can be longer than the longest string JavaScript holds.
 */
const BLOCK = 16 * 1024 * 1024; // hex digits decoded at a time (even)

export function blockHexToBytes(raw: Buffer): Buffer {
  if (raw[0] !== 0x5c || raw[1] !== 0x78) throw new Error('bytea value is not in hex format');
  const hex = raw.subarray(2);
  if (hex.length % 2 !== 0) throw new Error('bytea hex value has an odd number of digits');
  const out = Buffer.allocUnsafe(hex.length / 2);
  for (let at = 0; at < hex.length; at += BLOCK) {
    const piece = hex.subarray(at, at + BLOCK).toString('latin1');
    const written = out.write(piece, at / 2, 'hex');
    if (written * 2 !== piece.length) throw new Error('bytea hex value holds a character that is not a hex digit');
  }
  return out;
}
