//! PostgreSQL array literals (`{1,NULL,3}`, `{{1,2},{3,4}}`, `{"a b","c\"d"}`, `[0:1]={…}`) →
//! Avro arrays nested once per dimension, leaves `["null", T]`, as `parse_array` of
//! `bridge/source/converters.py` and the compiled writer produce them. Only what PostgreSQL prints
//! is read; anything else (a depth other than the column's, spaces, an empty element, a NULL
//! sub-array) is `Miss::Value`, and the reference path answers.

use super::convert::{put_long, Miss, Res};

/// One leaf element's text (unescaped when quoted) → its Avro bytes (with the union branch).
pub type Leaf<'a> = dyn FnMut(&[u8], &mut Vec<u8>) -> Res<()> + 'a;

/// Write the array literal `t` of `ndims` dimensions; `leaf` writes one non-NULL element.
pub fn array(t: &[u8], ndims: u32, delim: u8, leaf: &mut Leaf<'_>, out: &mut Vec<u8>) -> Res<()> {
    let t = if t.first() == Some(&b'[') {
        let eq = t.iter().position(|&c| c == b'=').ok_or(Miss::Value)?;
        &t[eq + 1..]
    } else {
        t
    };
    let mut pos = 0;
    let mut unescaped = Vec::new();
    level(t, &mut pos, ndims, delim, leaf, &mut unescaped, out)?;
    if pos != t.len() {
        return Err(Miss::Value);
    }
    Ok(())
}

fn level(
    t: &[u8],
    pos: &mut usize,
    depth: u32,
    delim: u8,
    leaf: &mut Leaf<'_>,
    unescaped: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Res<()> {
    if depth == 0 || t.get(*pos) != Some(&b'{') {
        return Err(Miss::Value);
    }
    *pos += 1;
    let mut items = Vec::new();
    let mut count: i64 = 0;
    if t.get(*pos) == Some(&b'}') {
        *pos += 1;
        out.push(0);
        return Ok(());
    }
    loop {
        if depth > 1 {
            level(t, pos, depth - 1, delim, leaf, unescaped, &mut items)?;
        } else {
            match t.get(*pos) {
                Some(b'"') => {
                    unescaped.clear();
                    let mut i = *pos + 1;
                    loop {
                        match t.get(i) {
                            None => return Err(Miss::Value),
                            Some(b'"') => break,
                            Some(b'\\') => {
                                unescaped.push(*t.get(i + 1).ok_or(Miss::Value)?);
                                i += 2;
                            }
                            Some(&c) => {
                                unescaped.push(c);
                                i += 1;
                            }
                        }
                    }
                    *pos = i + 1;
                    leaf(unescaped, &mut items)?;
                }
                _ => {
                    let start = *pos;
                    while let Some(&c) = t.get(*pos) {
                        if c == delim || c == b'}' {
                            break;
                        }
                        if matches!(c, b'{' | b'"' | b'\\') || c.is_ascii_whitespace() {
                            return Err(Miss::Value);
                        }
                        *pos += 1;
                    }
                    let e = &t[start..*pos];
                    if e.is_empty() {
                        return Err(Miss::Value);
                    }
                    if e == b"NULL" {
                        items.push(0);
                    } else {
                        leaf(e, &mut items)?;
                    }
                }
            }
        }
        count += 1;
        match t.get(*pos) {
            Some(&c) if c == delim => *pos += 1,
            Some(b'}') => {
                *pos += 1;
                break;
            }
            _ => return Err(Miss::Value),
        }
    }
    put_long(out, count);
    out.extend_from_slice(&items);
    out.push(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::convert::put_bytes;

    fn text_array(t: &[u8], ndims: u32) -> Res<Vec<u8>> {
        let mut out = Vec::new();
        let mut leaf = |e: &[u8], o: &mut Vec<u8>| {
            o.push(2);
            put_bytes(o, e);
            Ok(())
        };
        array(t, ndims, b',', &mut leaf, &mut out)?;
        Ok(out)
    }

    #[test]
    fn arrays_as_the_writer_writes_them() {
        assert_eq!(text_array(b"{}", 1), Ok(vec![0]));
        assert_eq!(text_array(b"{a,NULL}", 1), Ok(vec![4, 2, 2, b'a', 0, 0]));
        assert_eq!(
            text_array(br#"{"NULL","c\"d"}"#, 1).unwrap()[..3],
            [4, 2, 8]
        );
        assert_eq!(
            text_array(b"{{a},{b}}", 2),
            Ok(vec![4, 2, 2, 2, b'a', 0, 2, 2, 2, b'b', 0, 0])
        );
        assert_eq!(text_array(b"[0:0]={a}", 1), Ok(vec![2, 2, 2, b'a', 0]));
        assert_eq!(text_array(b"{{a}}", 1), Err(Miss::Value));
        assert_eq!(text_array(b"{a,,b}", 1), Err(Miss::Value));
        assert_eq!(text_array(b"{a} ", 1), Err(Miss::Value));
        assert_eq!(text_array(b"{\"a", 1), Err(Miss::Value));
    }
}
