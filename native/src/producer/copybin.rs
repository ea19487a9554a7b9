//! PostgreSQL's binary COPY stream (`COPY … TO STDOUT (FORMAT BINARY)`), read incrementally and
//! with bounds checks: the header (signature, flags, extension), tuples (an int16 field count,
//! then per field an int32 length, -1 for NULL, and the bytes), and the trailer (count -1).
//!
//! The stream comes from our own PostgreSQL, but a malformed one (truncated, forged lengths,
//! bytes after the trailer) is a `CopyError` naming the stream offset, never a panic.

use std::fmt;

pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyError {
    /// byte offset in the COPY stream where the problem is
    pub offset: u64,
    pub message: String,
}

impl fmt::Display for CopyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed binary COPY stream at offset {}: {}",
            self.offset, self.message
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    Rows,
    End,
}

/// What `next_row` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// a whole row: its fields are `field(i)`
    Row,
    /// the buffered bytes end inside the header or a row: `feed` more
    More,
    /// the trailer was read
    End,
}

/// Reads one COPY stream fed in blocks of any size.
pub struct CopyReader {
    buf: Vec<u8>,
    pos: usize,
    /// stream offset of `buf[0]`
    base: u64,
    state: State,
    ncols: usize,
    /// the current row's fields: (start in `buf`, length; -1 for NULL)
    fields: Vec<(usize, i32)>,
}

fn be_i16(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl CopyReader {
    /// A reader of tuples with exactly `ncols` fields.
    pub fn new(ncols: usize) -> Self {
        CopyReader {
            buf: Vec::new(),
            pos: 0,
            base: 0,
            state: State::Header,
            ncols,
            fields: Vec::with_capacity(ncols),
        }
    }

    /// Forget everything: the next byte fed is the start of a new stream.
    pub fn start(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.base = 0;
        self.state = State::Header;
        self.fields.clear();
    }

    fn err(&self, at: usize, message: impl Into<String>) -> CopyError {
        CopyError {
            offset: self.base + at as u64,
            message: message.into(),
        }
    }

    /// Append a block (the rows already read are dropped from the buffer first).
    pub fn feed(&mut self, data: &[u8]) {
        self.space(data.len()).copy_from_slice(data);
    }

    /// `n` new bytes at the end of the buffer, for the caller to fill (as `feed`).
    pub fn space(&mut self, n: usize) -> &mut [u8] {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
            self.fields.clear();
        }
        let old = self.buf.len();
        self.buf.resize(old + n, 0);
        &mut self.buf[old..]
    }

    fn header(&mut self) -> Result<bool, CopyError> {
        let b = &self.buf[self.pos..];
        let n = b.len().min(SIGNATURE.len());
        if b[..n] != SIGNATURE[..n] {
            return Err(self.err(self.pos, "not a binary COPY signature"));
        }
        let (Some(flags), Some(ext)) = (be_i32(b, 11), be_i32(b, 15)) else {
            return Ok(false);
        };
        if flags & (1 << 16) != 0 {
            return Err(self.err(self.pos + 11, "rows with OIDs are not supported"));
        }
        let ext = usize::try_from(ext)
            .map_err(|_| self.err(self.pos + 15, "negative header extension length"))?;
        if b.len() - 19 < ext {
            return Ok(false);
        }
        self.pos += 19 + ext;
        self.state = State::Rows;
        Ok(true)
    }

    /// Parse the next row if it is wholly buffered.
    pub fn next_row(&mut self) -> Result<Next, CopyError> {
        if self.state == State::Header && !self.header()? {
            return Ok(Next::More);
        }
        if self.state == State::End {
            return if self.pos < self.buf.len() {
                Err(self.err(self.pos, "data after the trailer"))
            } else {
                Ok(Next::End)
            };
        }
        let start = self.pos;
        let Some(count) = be_i16(&self.buf, start) else {
            return Ok(Next::More);
        };
        if count == -1 {
            self.pos += 2;
            self.state = State::End;
            return self.next_row();
        }
        if usize::try_from(count).ok() != Some(self.ncols) {
            return Err(self.err(
                start,
                format!("a row of {count} fields, expected {}", self.ncols),
            ));
        }
        self.fields.clear();
        let mut at = start + 2;
        for _ in 0..self.ncols {
            let Some(len) = be_i32(&self.buf, at) else {
                return Ok(Next::More);
            };
            at += 4;
            if len == -1 {
                self.fields.push((at, -1));
                continue;
            }
            let Ok(n) = usize::try_from(len) else {
                return Err(self.err(at - 4, format!("field length {len}")));
            };
            if self.buf.len() - at < n {
                return Ok(Next::More);
            }
            self.fields.push((at, len));
            at += n;
        }
        self.pos = at;
        Ok(Next::Row)
    }

    /// Field `i` of the current row; None for NULL (or past the row's fields).
    pub fn field(&self, i: usize) -> Option<&[u8]> {
        let &(at, len) = self.fields.get(i)?;
        let n = usize::try_from(len).ok()?;
        self.buf.get(at..at + n)
    }

    /// The stream must have ended, with nothing after its trailer.
    pub fn finish(&self) -> Result<(), CopyError> {
        match self.state {
            State::End if self.pos == self.buf.len() => Ok(()),
            State::End => Err(self.err(self.pos, "data after the trailer")),
            _ => Err(self.err(
                self.buf.len(),
                "the stream ends before its trailer (truncated)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut s = SIGNATURE.to_vec();
        s.extend_from_slice(&0i32.to_be_bytes());
        s.extend_from_slice(&0i32.to_be_bytes());
        for row in rows {
            s.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for f in *row {
                match f {
                    None => s.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        s.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        s.extend_from_slice(b);
                    }
                }
            }
        }
        s.extend_from_slice(&(-1i16).to_be_bytes());
        s
    }

    fn read_all(r: &mut CopyReader, data: &[u8], block: usize) -> Result<usize, CopyError> {
        let mut rows = 0;
        for chunk in data.chunks(block.max(1)) {
            r.feed(chunk);
            while r.next_row()? == Next::Row {
                rows += 1;
            }
        }
        r.finish()?;
        Ok(rows)
    }

    #[test]
    fn rows_in_blocks_of_any_size() {
        let data = stream(&[&[Some(b"ab"), None], &[Some(b""), Some(b"xyz")]]);
        for block in 1..data.len() + 1 {
            let mut r = CopyReader::new(2);
            assert_eq!(read_all(&mut r, &data, block), Ok(2), "block {block}");
        }
        let mut r = CopyReader::new(2);
        r.feed(&data);
        assert_eq!(r.next_row(), Ok(Next::Row));
        assert_eq!(r.field(0), Some(&b"ab"[..]));
        assert_eq!(r.field(1), None);
    }

    #[test]
    fn truncated_and_forged_streams_are_errors_with_offsets() {
        let data = stream(&[&[Some(b"ab"), None]]);
        for cut in 0..data.len() {
            let mut r = CopyReader::new(2);
            let e = read_all(&mut r, &data[..cut], 3).unwrap_err();
            assert!(e.offset <= cut as u64, "{e}");
            assert!(e.to_string().contains("offset"), "{e}");
        }
        let mut forged = data.clone();
        forged[21..25].copy_from_slice(&i32::MAX.to_be_bytes()); // first field's length
        assert!(read_all(&mut CopyReader::new(2), &forged, 7).is_err());
        forged[21..25].copy_from_slice(&(-5i32).to_be_bytes());
        let e = read_all(&mut CopyReader::new(2), &forged, 7).unwrap_err();
        assert_eq!(e.offset, 21);
        let mut wrong = data.clone();
        wrong[19..21].copy_from_slice(&3i16.to_be_bytes());
        assert_eq!(
            read_all(&mut CopyReader::new(2), &wrong, 64)
                .unwrap_err()
                .offset,
            19
        );
        let mut sig = data.clone();
        sig[0] = b'X';
        assert_eq!(
            read_all(&mut CopyReader::new(2), &sig, 64)
                .unwrap_err()
                .offset,
            0
        );
        let mut extra = data.clone();
        extra.push(0);
        assert!(read_all(&mut CopyReader::new(2), &extra, 64).is_err());
        let mut ext = data;
        ext[15..19].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            read_all(&mut CopyReader::new(2), &ext, 64)
                .unwrap_err()
                .offset,
            15
        );
    }
}
