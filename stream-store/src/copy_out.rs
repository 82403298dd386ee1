//! Reading the log through `COPY (SELECT …) TO STDOUT (FORMAT binary)`.
//!
//! A rebuild reads the whole log, a million events in the benchmark. Through sqlx's rows, half
//! of the process's CPU went to row handling (a stream item per row, a column lookup and a
//! decoder call per field); `COPY` hands over each row as one message of length-prefixed
//! fields, which are decoded here in one pass. The format is PostgreSQL's, fixed since 7.4:
//! <https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Actor, Payload, RecordedEvent, StoreError, StreamId};

/// The columns `parse` expects, in this order and of these types.
pub(crate) const EVENT_COLUMNS: &str = "position, stream_id, version, event_id, event_type, \
     schema_version, data, command_id, correlation_id, causation_id, actor_id, actor_role, \
     recorded_at";

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in microseconds since the Unix epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Decodes the binary `COPY` output of `SELECT {EVENT_COLUMNS} FROM events …`, fed in the
/// chunks the server sent (a chunk may end inside a row).
#[derive(Default)]
pub(crate) struct EventRows {
    pending: Vec<u8>,
    header_read: bool,
    trailer_read: bool,
}

impl EventRows {
    /// Takes the next chunk and appends every row it completes to `out`.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<RecordedEvent>,
    ) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            let used = self.parse(chunk, out)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let pending = std::mem::take(&mut self.pending);
            let used = self.parse(&pending, out)?;
            self.pending = pending[used..].to_vec();
        }
        Ok(())
    }

    /// Checks that the output ended where the format says it ends.
    pub(crate) fn finish(self) -> Result<(), StoreError> {
        if self.trailer_read && self.pending.is_empty() {
            Ok(())
        } else {
            Err(malformed("the output ended before its trailer"))
        }
    }

    /// Parses what `buf` holds whole; returns how many bytes that was.
    fn parse(&mut self, buf: &[u8], out: &mut Vec<RecordedEvent>) -> Result<usize, StoreError> {
        let mut used = 0;
        if !self.header_read {
            let fixed = SIGNATURE.len() + 8;
            if buf.len() < fixed {
                return Ok(0);
            }
            if &buf[..SIGNATURE.len()] != SIGNATURE {
                return Err(malformed("not binary COPY output"));
            }
            let extension = be_u32(&buf[SIGNATURE.len() + 4..fixed]) as usize;
            if buf.len() < fixed + extension {
                return Ok(0);
            }
            used = fixed + extension;
            self.header_read = true;
        }
        while used + 2 <= buf.len() {
            if self.trailer_read {
                return Err(malformed("data after the trailer"));
            }
            let rest = &buf[used..];
            let count = i16::from_be_bytes([rest[0], rest[1]]);
            if count == -1 {
                self.trailer_read = true;
                used += 2;
                continue;
            }
            let Some(len) = row_len(rest, count)? else {
                break;
            };
            out.push(decode_event(&rest[2..len], count)?);
            used += len;
        }
        Ok(used)
    }
}

/// The length of the row at the start of `buf` (count and fields), if `buf` holds all of it.
fn row_len(buf: &[u8], count: i16) -> Result<Option<usize>, StoreError> {
    let mut at = 2;
    for _ in 0..count {
        let Some(prefix) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        at += 4 + usize::try_from(len.max(0)).map_err(|_| malformed("field length"))?;
        if at > buf.len() {
            return Ok(None);
        }
    }
    Ok(Some(at))
}

fn decode_event(fields: &[u8], count: i16) -> Result<RecordedEvent, StoreError> {
    if count != 13 {
        return Err(malformed("a row has an unexpected number of columns"));
    }
    let mut f = Fields(fields);
    Ok(RecordedEvent {
        position: f.int8()?,
        // Stored names were validated when appended.
        stream_id: StreamId::trusted(f.text()?),
        version: f.int8()?,
        event_id: f.uuid()?,
        event_type: f.text()?,
        schema_version: f.int4()?,
        // The column is `json`: the server checked the text when it was written.
        data: Payload::from_text(f.text()?)?,
        command_id: f.uuid()?,
        correlation_id: f.uuid()?,
        causation_id: f.uuid()?,
        actor: Actor {
            id: f.text()?,
            role: f.text()?,
        },
        recorded_at: f.timestamptz()?,
    })
}

/// The fields of one row, read front to back; every column is NOT NULL.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next(&mut self) -> Result<&'a [u8], StoreError> {
        let (prefix, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("a row ends early"))?;
        let len = usize::try_from(i32::from_be_bytes(*prefix))
            .map_err(|_| malformed("a NULL in a NOT NULL column"))?;
        if rest.len() < len {
            return Err(malformed("a row ends early"));
        }
        let (field, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(field)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        self.next()?
            .try_into()
            .map_err(|_| malformed("a field of the wrong width"))
    }

    fn int8(&mut self) -> Result<i64, StoreError> {
        self.fixed().map(i64::from_be_bytes)
    }

    fn int4(&mut self) -> Result<i32, StoreError> {
        self.fixed().map(i32::from_be_bytes)
    }

    fn uuid(&mut self) -> Result<Uuid, StoreError> {
        self.fixed().map(Uuid::from_bytes)
    }

    fn text(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.next()?.to_vec()).map_err(|_| malformed("text that is not UTF-8"))
    }

    fn timestamptz(&mut self) -> Result<DateTime<Utc>, StoreError> {
        let micros = self.int8()?;
        micros
            .checked_add(PG_EPOCH_MICROS)
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| malformed("a timestamp out of range"))
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn malformed(what: &str) -> StoreError {
    StoreError::Unavailable(format!("reading the log: {what}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    fn row(position: i64) -> Vec<u8> {
        let mut r = 13i16.to_be_bytes().to_vec();
        field(&mut r, &position.to_be_bytes());
        field(&mut r, b"ticket-1");
        field(&mut r, &1i64.to_be_bytes());
        field(&mut r, Uuid::from_u128(7).as_bytes());
        field(&mut r, "TicketRaisé".as_bytes());
        field(&mut r, &1i32.to_be_bytes());
        field(&mut r, br#"{"a": [1, "x"]}"#);
        for n in 8..11u128 {
            field(&mut r, Uuid::from_u128(n).as_bytes());
        }
        field(&mut r, b"user-1");
        field(&mut r, b"admin");
        // 2026-11-21T10:00:00.000001Z
        field(
            &mut r,
            &(1_795_255_200_000_001 - PG_EPOCH_MICROS).to_be_bytes(),
        );
        r
    }

    fn output(rows: &[Vec<u8>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        rows.iter().for_each(|r| out.extend_from_slice(r));
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn rows_decode_whatever_the_chunking() {
        let bytes = output(&[row(1), row(2), row(3)]);
        for size in [1, 2, 3, 7, 19, 64, bytes.len()] {
            let (mut rows, mut events) = (EventRows::default(), Vec::new());
            for chunk in bytes.chunks(size) {
                rows.feed(chunk, &mut events).unwrap();
            }
            rows.finish().unwrap();
            assert_eq!(
                events.iter().map(|e| e.position).collect::<Vec<_>>(),
                [1, 2, 3],
                "chunks of {size}"
            );
            let e = &events[2];
            assert_eq!(e.stream_id.as_str(), "ticket-1");
            assert_eq!(e.event_type, "TicketRaisé");
            assert_eq!(e.event_id, Uuid::from_u128(7));
            assert_eq!(e.causation_id, Uuid::from_u128(10));
            assert_eq!(e.actor.role, "admin");
            assert_eq!(e.data.to_value(), serde_json::json!({ "a": [1, "x"] }));
            assert_eq!(
                e.recorded_at.to_rfc3339(),
                "2026-11-21T10:00:00.000001+00:00"
            );
        }
    }

    #[test]
    fn damaged_output_is_an_error_not_a_panic() {
        let whole = output(&[row(1)]);
        let mut short_field = row(1);
        short_field[2..6].copy_from_slice(&100i32.to_be_bytes());
        let mut null = row(1);
        null[2..6].copy_from_slice(&(-1i32).to_be_bytes());
        for bytes in [
            whole[..whole.len() - 2].to_vec(),
            whole[..whole.len() - 5].to_vec(),
            b"PGCOPY\n\xff\r\n\x01junk".to_vec(),
            output(&[short_field]),
            output(&[null]),
            [whole.clone(), vec![0, 1]].concat(),
        ] {
            let (mut rows, mut events) = (EventRows::default(), Vec::new());
            let result = rows.feed(&bytes, &mut events).and_then(|()| rows.finish());
            assert!(result.is_err(), "{bytes:?}");
        }
    }
}
