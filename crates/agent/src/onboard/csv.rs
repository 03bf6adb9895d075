//! A small CSV reader for register maps as spreadsheets export them: RFC 4180 quoting
//! (`"a ""b"""`, line breaks inside quotes), `,`, `;` or tab as the delimiter (whichever
//! the header line uses most, outside quotes), a UTF-8 byte order mark, Windows or Unix
//! line ends. Every record keeps the line it starts on, so errors can name it. Pure.

/// One record: its fields and the (1-based) line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: usize,
    pub fields: Vec<String>,
}

/// What made a file unreadable as CSV at all (a bad row is the importer's business).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("line {line}: the file is not UTF-8 (byte {byte:#04x} at column {column}); save it as UTF-8 (\"CSV UTF-8\" in a spreadsheet)")]
    NotUtf8 {
        line: usize,
        column: usize,
        byte: u8,
    },
    #[error("the file is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8 (\"CSV UTF-8\" in a spreadsheet)")]
    Utf16,
    #[error("line {line}: a quoted field is not closed before the end of the file")]
    Unclosed { line: usize },
    #[error("the file is empty; expected a header line and one line per register")]
    Empty,
}

/// Decodes `bytes` (UTF-8, with or without BOM) and splits it into records; blank lines
/// are left out. Returns the delimiter found too.
pub fn parse(bytes: &[u8]) -> Result<(char, Vec<Record>), CsvError> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(CsvError::Utf16);
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let before = &bytes[..at];
        let line = before.split(|&b| b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        // Characters, not bytes, before the bad byte on its line.
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        CsvError::NotUtf8 {
            line,
            column,
            byte: bytes[at],
        }
    })?;
    let delimiter = delimiter(text);
    let records = split(text, delimiter)?;
    if records.is_empty() {
        return Err(CsvError::Empty);
    }
    Ok((delimiter, records))
}

/// The delimiter the first line uses most outside quotes (`,` when it has none).
fn delimiter(text: &str) -> char {
    let mut counts = [(',', 0usize), (';', 0), ('\t', 0)];
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '\n' if !quoted => break,
            c if !quoted => {
                if let Some(entry) = counts.iter_mut().find(|(d, _)| *d == c) {
                    entry.1 += 1;
                }
            }
            _ => {}
        }
    }
    counts
        .iter()
        .fold(
            (',', 0),
            |best, &(d, n)| if n > best.1 { (d, n) } else { best },
        )
        .0
}

fn split(text: &str, delimiter: char) -> Result<Vec<Record>, CsvError> {
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start = 1;
    let mut quoted = false;
    // The field began with a quote (so a delimiter inside it is text).
    let mut chars = text.chars().peekable();
    let mut finish = |fields: &mut Vec<String>, field: &mut String, start: usize| {
        fields.push(std::mem::take(field));
        let record = std::mem::take(fields);
        if !(record.len() == 1 && record[0].trim().is_empty()) {
            records.push(Record {
                line: start,
                fields: record,
            });
        }
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            c if c == delimiter => fields.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                finish(&mut fields, &mut field, start);
                line += 1;
                start = line;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(CsvError::Unclosed { line: start });
    }
    if !field.is_empty() || !fields.is_empty() {
        finish(&mut fields, &mut field, start);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(records: &[Record]) -> Vec<Vec<&str>> {
        records
            .iter()
            .map(|r| r.fields.iter().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn a_bom_crlf_and_semicolons_read_like_a_plain_comma_file() {
        let (d, records) =
            parse(b"\xEF\xBB\xBFname;address\r\nzone1;40001\r\n\r\nzone2;40003\r\n").unwrap();
        assert_eq!(d, ';');
        assert_eq!(
            fields(&records),
            [
                vec!["name", "address"],
                vec!["zone1", "40001"],
                vec!["zone2", "40003"]
            ]
        );
        assert_eq!(
            records.iter().map(|r| r.line).collect::<Vec<_>>(),
            [1, 2, 4]
        );
    }

    #[test]
    fn quoted_fields_keep_delimiters_quotes_and_line_breaks_and_lines_stay_counted() {
        let (d, records) =
            parse(b"name,description\n\"a,b\",\"say \"\"hi\"\"\nthere\"\nc,d\n").unwrap();
        assert_eq!(d, ',');
        assert_eq!(fields(&records)[1], ["a,b", "say \"hi\"\nthere"]);
        assert_eq!(
            records[2].line, 4,
            "the record after a two-line field starts on line 4"
        );
    }

    #[test]
    fn tabs_are_found_as_the_delimiter() {
        let (d, records) = parse(b"name\taddress\tunit\nx\t1\t\xC2\xB0C").unwrap();
        assert_eq!(d, '\t');
        assert_eq!(fields(&records)[1], ["x", "1", "°C"]);
    }

    #[test]
    fn latin1_bytes_are_reported_with_their_line_and_column() {
        let err = parse(b"name,unit\nt1,\xB0C\n").unwrap_err();
        assert_eq!(
            err,
            CsvError::NotUtf8 {
                line: 2,
                column: 4,
                byte: 0xB0
            }
        );
        assert!(err.to_string().contains("save it as UTF-8"));
        assert_eq!(parse(b"\xFF\xFEn\0").unwrap_err(), CsvError::Utf16);
    }

    #[test]
    fn an_unclosed_quote_and_an_empty_file_are_errors() {
        assert_eq!(
            parse(b"a,b\n\"x,1\n").unwrap_err(),
            CsvError::Unclosed { line: 2 }
        );
        assert_eq!(parse(b"\xEF\xBB\xBF\r\n").unwrap_err(), CsvError::Empty);
    }
}
