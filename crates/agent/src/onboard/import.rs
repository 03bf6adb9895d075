//! `linesentry import modbus FILE.csv`: a Modbus register map in CSV to a station profile.
//! Pure: bytes in, profile text (or every problem, each with its line and column) out.
//!
//! # Columns
//!
//! The header line names the columns, in any order and case; spaces, `_`, `-` and `.` in a
//! header are ignored. Each column has the profile key's name and the names vendor
//! spreadsheets use for it:
//!
//! | column | required | aliases | values |
//! |---|---|---|---|
//! | `name` | yes | tag, tag name, point, point name, variable, symbol, signal, label | any text; folded to snake_case (`Zone 1 Temp` -> `zone_1_temp`) |
//! | `area` | unless the address is a Modicon reference | table, register type, object type, data table, memory area, function, function code, fc | `coil`, `discrete_input`, `holding_register`, `input_register`; also `coils`, `0x`, `fc1`, `di`, `1x`, `input status`, `fc2`, `ir`, `3x`, `input`, `fc4`, `hr`, `4x`, `holding`, `fc3` |
//! | `address` | yes | register, register address, addr, start address, modbus address, reg, location | a number (zero-based, or one-based with `--one-based`); `N.B` is register N, bit B; with no area, a 5- or 6-digit Modicon reference (`40001`, `300010`) names area and one-based register |
//! | `type` | no: `u16` for registers, `bool` for bits | data type, datatype, dtype, format, value type | `bool`, `u16`..`i64`, `f32`, `f64`, `string` and the PLC names (`word`, `int`, `dint`, `udint`, `real`, `lreal`, `float`, `double`, ...) |
//! | `order` | no (`ABCD`) | byte order, word order, endian, endianness, swap | `ABCD`, `CDAB`, `BADC`, `DCBA`; `big`, `little`, `word swap`, `byte swap`, `1234`, `3412`, `2143`, `4321` |
//! | `bit` | bool in a register | bit index, bit number, bit no, bit offset | 0-15 |
//! | `length` | strings | len, registers, register count, count, size, words, quantity | registers (two characters each) |
//! | `scale`, `offset` | no | multiplier, gain, factor, scale factor, scaling / bias | number (a decimal comma is read too) |
//! | `unit` | no | units, eng unit, engineering units, uom, eu | text |
//! | `role` | no: suggested from the name | usage, category, kind, purpose | a profile role (`setpoint`, `measurement`, ...) |
//! | `min`, `max` | no | low / high, lo / hi, range min / range max, eu min / eu max, low limit / high limit, minimum / maximum | numbers; both or neither |
//! | `limits` | no | range | `MIN..MAX` |
//! | `states` | integer status and mode tags | enum, enumeration, values, state text | `0=idle|1=run` (`|`, `,` or `;` between, `=` or `:` inside) |
//! | `description` | no | desc, comment, comments, remark, note, notes | written as a comment |
//!
//! Other columns are ignored and listed as such. A role left empty is suggested from the
//! name and type ([`super::roles::suggest`]) and marked in a comment.
//!
//! # Checks
//!
//! Every row is checked and every problem reported at once, as `FILE:LINE:COLUMN: header:
//! message`. Besides the values: names that fold to the same tag name, registers that two
//! tags both cover (bits of one register may share it, not the same bit), values that run
//! past register 65535, keys that do not apply to the type. The profile text is then
//! validated by the profile loader; a problem it finds is mapped back to the row's line.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use super::csv::{self, Record};
use super::{roles, snake_name, toml_float, toml_str};
use crate::source::{ByteOrder, DataType, RegisterArea, TagRole};

/// What the importer needs beyond the file.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The profile's name (the output file's stem).
    pub profile_name: String,
    /// The register map's file name, for messages and the description.
    pub source_name: String,
    /// Addresses in the file are one-based (register 1 is protocol address 0); the profile
    /// is written with `addressing = "one_based"` and the addresses as in the file.
    pub one_based: bool,
}

/// One problem, at a line and (where it is one field's) a column of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub line: usize,
    /// 1-based column number and its header text.
    pub column: Option<(usize, String)>,
    pub message: String,
}

/// Every problem of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportErrors {
    pub file: String,
    pub errors: Vec<ImportError>,
}

impl fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match &e.column {
                Some((n, header)) => {
                    write!(f, "{}:{}:{n}: `{header}`: {}", self.file, e.line, e.message)?;
                }
                None => write!(f, "{}:{}: {}", self.file, e.line, e.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ImportErrors {}

/// A profile made from a register map.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The profile file's text.
    pub text: String,
    /// The line of the file each tag came from, in tag order.
    pub lines: Vec<usize>,
    /// Things worth knowing that are not errors (ignored columns, suggested roles).
    pub notes: Vec<String>,
}

impl Imported {
    /// The file line of the tag a loader key path (`tags[3].states`) names.
    pub fn line_of(&self, key_path: &str) -> Option<usize> {
        let rest = key_path.strip_prefix("tags[")?;
        let index: usize = rest.split(']').next()?.parse().ok()?;
        self.lines.get(index).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Column {
    Name,
    Area,
    Address,
    Type,
    Order,
    Bit,
    Length,
    Scale,
    Offset,
    Unit,
    Role,
    Min,
    Max,
    Limits,
    States,
    Description,
}

const COLUMNS: &[(Column, &[&str])] = &[
    (
        Column::Name,
        &[
            "name",
            "tag",
            "tagname",
            "point",
            "pointname",
            "variable",
            "symbol",
            "signal",
            "label",
        ],
    ),
    (
        Column::Area,
        &[
            "area",
            "table",
            "registertype",
            "regtype",
            "objecttype",
            "datatable",
            "memoryarea",
            "function",
            "functioncode",
            "fc",
            "registerarea",
        ],
    ),
    (
        Column::Address,
        &[
            "address",
            "register",
            "registeraddress",
            "addr",
            "startaddress",
            "modbusaddress",
            "reg",
            "location",
        ],
    ),
    (
        Column::Type,
        &[
            "type",
            "datatype",
            "dtype",
            "format",
            "valuetype",
            "dataformat",
        ],
    ),
    (
        Column::Order,
        &[
            "order",
            "byteorder",
            "wordorder",
            "endian",
            "endianness",
            "swap",
        ],
    ),
    (
        Column::Bit,
        &["bit", "bitindex", "bitnumber", "bitno", "bitoffset"],
    ),
    (
        Column::Length,
        &[
            "length",
            "len",
            "registers",
            "registercount",
            "count",
            "size",
            "stringlength",
            "words",
            "quantity",
        ],
    ),
    (
        Column::Scale,
        &[
            "scale",
            "scaling",
            "scalefactor",
            "multiplier",
            "gain",
            "factor",
        ],
    ),
    (Column::Offset, &["offset", "valueoffset", "bias"]),
    (
        Column::Unit,
        &[
            "unit",
            "units",
            "engunit",
            "engunits",
            "engineeringunit",
            "engineeringunits",
            "uom",
            "eu",
        ],
    ),
    (
        Column::Role,
        &["role", "usage", "category", "kind", "purpose"],
    ),
    (
        Column::Min,
        &[
            "min",
            "minimum",
            "low",
            "lo",
            "rangemin",
            "eumin",
            "lowlimit",
            "minvalue",
            "rangelow",
            "lowerlimit",
        ],
    ),
    (
        Column::Max,
        &[
            "max",
            "maximum",
            "high",
            "hi",
            "rangemax",
            "eumax",
            "highlimit",
            "maxvalue",
            "rangehigh",
            "upperlimit",
        ],
    ),
    (Column::Limits, &["limits", "range"]),
    (
        Column::States,
        &["states", "enum", "enumeration", "values", "statetext"],
    ),
    (
        Column::Description,
        &[
            "description",
            "desc",
            "comment",
            "comments",
            "remark",
            "note",
            "notes",
        ],
    ),
];

fn fold(header: &str) -> String {
    header
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Turns the register map `bytes` into a profile, or says everything that is wrong with it.
pub fn import(bytes: &[u8], options: &ImportOptions) -> Result<Imported, ImportErrors> {
    let fail = |errors: Vec<ImportError>| ImportErrors {
        file: options.source_name.clone(),
        errors,
    };
    let (delimiter, records) = csv::parse(bytes).map_err(|e| {
        let line = match e {
            csv::CsvError::NotUtf8 { line, .. } | csv::CsvError::Unclosed { line } => line,
            csv::CsvError::Utf16 | csv::CsvError::Empty => 1,
        };
        let message = e.to_string();
        let message = message
            .strip_prefix(&format!("line {line}: "))
            .unwrap_or(&message)
            .to_owned();
        fail(vec![ImportError {
            line,
            column: None,
            message,
        }])
    })?;
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let (header, rows) = records.split_first().ok_or_else(|| fail(Vec::new()))?;
    let columns = header_columns(header, &mut errors, &mut notes);
    for required in [Column::Name, Column::Address] {
        if !columns.contains_key(&required) {
            errors.push(ImportError {
                line: header.line,
                column: None,
                message: format!(
                    "no `{}` column; expected a header line naming the columns, such as `name{d}area{d}address{d}type`",
                    name_of(required),
                    d = delimiter
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Err(fail(errors));
    }
    if rows.is_empty() {
        return Err(fail(vec![ImportError {
            line: header.line,
            column: None,
            message: "no rows after the header line; expected one row per register".into(),
        }]));
    }
    let mut tags = Vec::with_capacity(rows.len());
    for record in rows {
        let mut row = Row {
            record,
            header,
            columns: &columns,
            errors: &mut errors,
        };
        if let Some(tag) = row.tag(options.one_based) {
            tags.push(tag);
        }
    }
    cross_checks(&tags, &mut errors, header, &columns);
    if !errors.is_empty() {
        errors.sort_by_key(|e| (e.line, e.column.as_ref().map(|c| c.0)));
        return Err(fail(errors));
    }
    for tag in &tags {
        if let Some(why) = &tag.suggested {
            notes.push(format!(
                "line {}: `{}`: role {} suggested ({why})",
                tag.line, tag.name, tag.role
            ));
        }
    }
    Ok(Imported {
        text: render(&tags, options),
        lines: tags.iter().map(|t| t.line).collect(),
        notes,
    })
}

fn name_of(column: Column) -> &'static str {
    COLUMNS
        .iter()
        .find(|(c, _)| *c == column)
        .map_or("?", |(_, names)| names[0])
}

fn header_columns(
    header: &Record,
    errors: &mut Vec<ImportError>,
    notes: &mut Vec<String>,
) -> BTreeMap<Column, usize> {
    let mut columns = BTreeMap::new();
    for (i, text) in header.fields.iter().enumerate() {
        let folded = fold(text);
        if folded.is_empty() {
            continue;
        }
        let Some((column, _)) = COLUMNS
            .iter()
            .find(|(_, names)| names.contains(&folded.as_str()))
        else {
            notes.push(format!(
                "column {} `{}` is not a profile column; ignored",
                i + 1,
                text.trim()
            ));
            continue;
        };
        if let Some(first) = columns.insert(*column, i) {
            columns.insert(*column, first);
            errors.push(ImportError {
                line: header.line,
                column: Some((i + 1, text.trim().to_owned())),
                message: format!(
                    "a second `{}` column (the first is column {} `{}`); expected each column once",
                    name_of(*column),
                    first + 1,
                    header.fields[first].trim()
                ),
            });
        }
    }
    columns
}

/// One row, validated.
#[derive(Debug, Clone)]
struct Tag {
    line: usize,
    name: String,
    area: RegisterArea,
    /// As it will be written (zero- or one-based like the profile).
    address: i64,
    /// Zero-based first register or bit.
    index: i64,
    data_type: DataType,
    order: Option<ByteOrder>,
    bit: Option<u8>,
    length: u16,
    scale: Option<f64>,
    offset: Option<f64>,
    unit: Option<String>,
    role: TagRole,
    /// Why the role was suggested, when the file gave none.
    suggested: Option<String>,
    limits: Option<(f64, f64)>,
    states: BTreeMap<i64, String>,
    description: Option<String>,
}

impl Tag {
    fn span(&self) -> i64 {
        match self.data_type {
            DataType::String => i64::from(self.length.max(1)),
            t if self.area.is_bit() => i64::from(t.registers().min(1)),
            t => i64::from(t.registers()),
        }
    }
}

struct Row<'a> {
    record: &'a Record,
    header: &'a Record,
    columns: &'a BTreeMap<Column, usize>,
    errors: &'a mut Vec<ImportError>,
}

impl Row<'_> {
    /// The trimmed text of `column`, `None` when the column is missing or the cell empty.
    fn get(&self, column: Column) -> Option<&str> {
        let i = *self.columns.get(&column)?;
        let text = self.record.fields.get(i)?.trim();
        (!text.is_empty()).then_some(text)
    }

    fn error(&mut self, column: Option<Column>, message: impl Into<String>) {
        let column = column.and_then(|c| {
            let i = *self.columns.get(&c)?;
            Some((i + 1, self.header.fields[i].trim().to_owned()))
        });
        self.errors.push(ImportError {
            line: self.record.line,
            column,
            message: message.into(),
        });
    }

    fn number(&mut self, column: Column) -> Option<f64> {
        let text = self.get(column)?.to_owned();
        match parse_number(&text) {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                self.error(
                    Some(column),
                    format!("expected a number, found `{}`", text.escape_debug()),
                );
                None
            }
        }
    }

    #[allow(clippy::too_many_lines)] // one check per column, in column order
    fn tag(&mut self, one_based: bool) -> Option<Tag> {
        let before = self.errors.len();
        let raw_name = self.get(Column::Name).map(str::to_owned);
        let name = match raw_name.as_deref() {
            None => {
                self.error(Some(Column::Name), "empty name; expected the tag's name");
                None
            }
            Some(text) => {
                let name = snake_name(text);
                if name.is_none() {
                    self.error(
                        Some(Column::Name),
                        format!(
                            "`{}` has no letter or digit to make a tag name of",
                            text.escape_debug()
                        ),
                    );
                }
                name
            }
        };
        let area_text = self.get(Column::Area).map(str::to_owned);
        let address_text = self.get(Column::Address).map(str::to_owned);
        let mut area = match area_text.as_deref() {
            Some(text) => {
                let area = parse_area(text);
                if area.is_none() {
                    self.error(Some(Column::Area), format!("unknown area `{}`; expected coil, discrete_input, holding_register or input_register (or 0x, 1x, 3x, 4x, fc1-fc4)", text.escape_debug()));
                }
                area
            }
            None => None,
        };
        let mut bit_in_address = None;
        let (address, index) = match address_text.as_deref() {
            None => {
                self.error(
                    Some(Column::Address),
                    "empty address; expected the register or bit number",
                );
                (None, None)
            }
            Some(text) => {
                let (number, bit) = match text.split_once('.') {
                    Some((n, b)) => (n, Some(b)),
                    None => (text, None),
                };
                if let Some(b) = bit {
                    match b.parse::<u8>() {
                        Ok(b) if b <= 15 => bit_in_address = Some(b),
                        _ => self.error(
                            Some(Column::Address),
                            format!("`{text}`: expected REGISTER.BIT with a bit 0-15"),
                        ),
                    }
                }
                match parse_integer(number) {
                    None => {
                        self.error(
                            Some(Column::Address),
                            format!(
                                "expected a register number, found `{}`",
                                text.escape_debug()
                            ),
                        );
                        (None, None)
                    }
                    Some(n) if area_text.is_none() => {
                        if let Some((a, register)) = modicon(number, n) {
                            area = Some(a);
                            let address = if one_based { register } else { register - 1 };
                            (Some(address), Some(register - 1))
                        } else {
                            self.error(Some(Column::Area), format!("empty area and the address {n} is no Modicon reference (such as 40001); expected coil, discrete_input, holding_register or input_register"));
                            (None, None)
                        }
                    }
                    Some(n) => {
                        let min = i64::from(one_based);
                        let max = 65535 + min;
                        if (min..=max).contains(&n) {
                            (Some(n), Some(n - min))
                        } else {
                            self.error(Some(Column::Address), format!("expected an address between {min} and {max} ({} addressing), found {n}", if one_based { "one-based, --one-based" } else { "zero-based; pass --one-based for a map that counts from 1" }));
                            (None, None)
                        }
                    }
                }
            }
        };
        let data_type = match self.get(Column::Type).map(str::to_owned) {
            Some(text) => {
                let t = parse_type(&text);
                if t.is_none() {
                    self.error(Some(Column::Type), format!("unknown type `{}`; expected bool, u16, i16, u32, i32, u64, i64, f32, f64 or string (or word, int, dint, real, lreal, ...)", text.escape_debug()));
                }
                t
            }
            None => area.map(|a| {
                if a.is_bit() {
                    DataType::Bool
                } else {
                    DataType::U16
                }
            }),
        };
        let order = match self.get(Column::Order).map(str::to_owned) {
            Some(text) => {
                let order = parse_order(&text);
                if order.is_none() {
                    self.error(Some(Column::Order), format!("unknown byte order `{}`; expected ABCD, CDAB, BADC or DCBA (or big, little, word swap, byte swap)", text.escape_debug()));
                }
                order
            }
            None => None,
        };
        let bit = match (self.get(Column::Bit).map(str::to_owned), bit_in_address) {
            (Some(text), _) => match text.parse::<u8>() {
                Ok(b) if b <= 15 => Some(b),
                _ => {
                    self.error(
                        Some(Column::Bit),
                        format!(
                            "expected a bit number 0-15, found `{}`",
                            text.escape_debug()
                        ),
                    );
                    None
                }
            },
            (None, b) => b,
        };
        let length = match self.get(Column::Length).map(str::to_owned) {
            Some(text) => match text.parse::<u16>() {
                Ok(n) if (1..=125).contains(&n) => Some(n),
                _ => {
                    self.error(
                        Some(Column::Length),
                        format!(
                            "expected a number of registers 1-125, found `{}`",
                            text.escape_debug()
                        ),
                    );
                    None
                }
            },
            None => None,
        };
        let scale = self.number(Column::Scale);
        let offset = self.number(Column::Offset);
        let unit = self.get(Column::Unit).map(str::to_owned);
        let mut limits = None;
        let (min, max) = (self.number(Column::Min), self.number(Column::Max));
        match (min, max) {
            (Some(lo), Some(hi)) => limits = Some((lo, hi)),
            (Some(_), None) if self.get(Column::Max).is_none() => self.error(
                Some(Column::Max),
                "a min without a max; expected both limits or neither",
            ),
            (None, Some(_)) if self.get(Column::Min).is_none() => self.error(
                Some(Column::Min),
                "a max without a min; expected both limits or neither",
            ),
            // Neither, or one that did not parse (reported already).
            _ => {}
        }
        if let Some(text) = self.get(Column::Limits).map(str::to_owned) {
            match text
                .split_once("..")
                .map(|(a, b)| (parse_number(a.trim()), parse_number(b.trim())))
            {
                Some((Some(lo), Some(hi))) if lo.is_finite() && hi.is_finite() => {
                    limits = Some((lo, hi));
                }
                _ => self.error(
                    Some(Column::Limits),
                    format!(
                        "expected MIN..MAX, such as 0..300, found `{}`",
                        text.escape_debug()
                    ),
                ),
            }
        }
        if let Some((lo, hi)) = limits {
            if lo >= hi {
                let column = if self.get(Column::Limits).is_some() {
                    Column::Limits
                } else {
                    Column::Max
                };
                self.error(
                    Some(column),
                    format!("expected min < max, found min = {lo} and max = {hi}"),
                );
            }
        }
        let states = match self.get(Column::States).map(str::to_owned) {
            Some(text) => match parse_states(&text) {
                Ok(states) => states,
                Err(why) => {
                    self.error(Some(Column::States), why);
                    BTreeMap::new()
                }
            },
            None => BTreeMap::new(),
        };
        let given_role = match self.get(Column::Role).map(str::to_owned) {
            Some(text) => {
                let role = parse_role(&text);
                if role.is_none() {
                    self.error(Some(Column::Role), format!("unknown role `{}`; expected one of status, mode, setpoint, alarm_limit, alarm_enable, alarm_active, quality_result, part_id, program_checksum, firmware, counter, measurement, change_window", text.escape_debug()));
                }
                role
            }
            None => None,
        };
        let description = self.get(Column::Description).map(str::to_owned);

        // Checks across the columns of the row, where the values themselves were fine.
        let (Some(name), Some(area), Some(address), Some(index), Some(data_type)) =
            (name, area, address, index, data_type)
        else {
            return None;
        };
        let role_given = self.get(Column::Role).is_some();
        let (role, suggested) = match given_role {
            Some(role) => (role, None),
            None if role_given => return None,
            None => {
                let (role, why) = roles::suggest(raw_name.as_deref().unwrap_or(&name), data_type);
                (
                    role,
                    Some(
                        why.unwrap_or_else(|| {
                            format!("the default for a {} tag", data_type.name())
                        }),
                    ),
                )
            }
        };
        let numeric = data_type.is_numeric();
        let wide = data_type.registers() >= 2;
        if area.is_bit() && data_type != DataType::Bool {
            self.error(
                Some(Column::Type),
                format!(
                    "a {} holds single bits; expected type bool, found {}",
                    area_name(area),
                    data_type.name()
                ),
            );
        }
        if area.is_bit() && bit.is_some() {
            self.error(
                Some(if self.get(Column::Bit).is_some() {
                    Column::Bit
                } else {
                    Column::Address
                }),
                format!(
                    "a bit number only applies to a bool in a register; a {} is a bit already",
                    area_name(area)
                ),
            );
        }
        if !area.is_bit() && data_type == DataType::Bool && bit.is_none() {
            self.error(Some(Column::Bit), "a bool in a register needs its bit number (0-15, in a `bit` column or as REGISTER.BIT)");
        }
        if data_type != DataType::Bool && bit.is_some() {
            self.error(
                Some(if self.get(Column::Bit).is_some() {
                    Column::Bit
                } else {
                    Column::Address
                }),
                format!(
                    "a bit number only applies to bool tags, not {}",
                    data_type.name()
                ),
            );
        }
        let order = match order {
            Some(o)
                if !wide
                    && data_type != DataType::String
                    && matches!(o, ByteOrder::BADC | ByteOrder::DCBA)
                    && !area.is_bit() =>
            {
                self.error(Some(Column::Order), format!("{o:?} swaps the bytes of a 16-bit {} value, which the agent does not decode; expected ABCD (or none)", data_type.name()));
                None
            }
            // A byte-order column filled on every row: meaningless for 16-bit values.
            Some(_) if !wide => None,
            o => o,
        };
        let length = match (data_type, length) {
            (DataType::String, Some(n)) => n,
            (DataType::String, None) => {
                self.error(
                    Some(Column::Length),
                    "a string needs its length in registers (1-125)",
                );
                0
            }
            (_, Some(n)) if n == data_type.registers() || (area.is_bit() && n == 1) => 0,
            (_, Some(n)) => {
                self.error(Some(Column::Length), format!("a {} value is {} register(s), found a length of {n}; a length only applies to strings", data_type.name(), data_type.registers()));
                0
            }
            (_, None) => 0,
        };
        #[allow(clippy::float_cmp)] // the exact neutral values a spreadsheet fills in
        let neutral = |x: Option<f64>, n: f64| x.is_none_or(|x| x == n);
        if !numeric {
            if !neutral(scale, 1.0) {
                self.error(
                    Some(Column::Scale),
                    format!(
                        "a scale only applies to numeric types, not {}",
                        data_type.name()
                    ),
                );
            }
            if !neutral(offset, 0.0) {
                self.error(
                    Some(Column::Offset),
                    format!(
                        "an offset only applies to numeric types, not {}",
                        data_type.name()
                    ),
                );
            }
            if limits.is_some() {
                let column = if self.get(Column::Limits).is_some() {
                    Column::Limits
                } else {
                    Column::Min
                };
                self.error(
                    Some(column),
                    format!(
                        "limits only apply to numeric types, not {}",
                        data_type.name()
                    ),
                );
            }
        }
        if scale == Some(0.0) {
            self.error(
                Some(Column::Scale),
                "a scale of 0 makes every value 0; expected a non-zero number",
            );
        }
        let integer = numeric && !matches!(data_type, DataType::F32 | DataType::F64);
        if !(states.is_empty() || integer || data_type == DataType::Bool) {
            self.error(
                Some(Column::States),
                format!(
                    "states name integer raw values; a {} tag has none",
                    data_type.name()
                ),
            );
        }
        if data_type == DataType::Bool && states.keys().any(|k| !(0..=1).contains(k)) {
            self.error(Some(Column::States), "a bool's states are 0 and 1 only");
        }
        let (role, suggested) = if integer
            && matches!(role, TagRole::Status | TagRole::Mode)
            && states.is_empty()
        {
            if role_given {
                self.error(Some(Column::States), format!("a {role} tag of type {} needs states (raw value = name), such as `0=idle|1=run`", data_type.name()));
                (role, None)
            } else {
                (TagRole::Measurement, Some(format!("the name suggests {role}, which needs states; add a `states` column and set the role")))
            }
        } else {
            (role, suggested)
        };
        if role == TagRole::AlarmActive && !(integer || data_type == DataType::Bool) {
            self.error(Some(Column::Role), format!("an alarm_active tag is on or off; expected type bool or an integer type, found {}", data_type.name()));
        }
        let tag = Tag {
            line: self.record.line,
            name,
            area,
            address,
            index,
            data_type,
            order,
            bit,
            length,
            scale: scale.filter(|_| numeric),
            offset: offset.filter(|_| numeric),
            unit,
            role,
            suggested,
            limits,
            states,
            description,
        };
        let last = tag.index + tag.span() - 1;
        if last > 65535 {
            self.error(Some(Column::Address), format!("the value spans registers {} to {last} (zero-based), past the last register 65535", tag.index));
        }
        (self.errors.len() == before).then_some(tag)
    }
}

/// Duplicate names and registers two tags both cover, each reported at the later row.
fn cross_checks(
    tags: &[Tag],
    errors: &mut Vec<ImportError>,
    header: &Record,
    columns: &BTreeMap<Column, usize>,
) {
    let at = |column: Column| {
        columns
            .get(&column)
            .map(|&i| (i + 1, header.fields[i].trim().to_owned()))
    };
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for tag in tags {
        if let Some(first) = names.insert(&tag.name, tag.line) {
            names.insert(&tag.name, first);
            errors.push(ImportError {
                line: tag.line,
                column: at(Column::Name),
                message: format!("duplicate tag name `{}` (first on line {first}); expected unique names after folding to snake_case", tag.name),
            });
        }
    }
    // Per area, spans sorted by start: each overlaps the ones before it that reach it.
    let mut by_area: BTreeMap<u8, Vec<&Tag>> = BTreeMap::new();
    for tag in tags {
        by_area.entry(area_key(tag.area)).or_default().push(tag);
    }
    for list in by_area.values_mut() {
        list.sort_by_key(|t| (t.index, t.line));
        let mut open: Vec<&Tag> = Vec::new();
        for &tag in list.iter() {
            open.retain(|o| o.index + o.span() > tag.index);
            for &other in &open {
                let both_bits = tag.bit.is_some() && other.bit.is_some();
                let one_bit = tag.bit.is_some() != other.bit.is_some();
                if one_bit || (both_bits && tag.bit != other.bit) {
                    // Bits of a status word may sit beside a tag that reads the whole word.
                    continue;
                }
                let (later, earlier) = if tag.line > other.line {
                    (tag, other)
                } else {
                    (other, tag)
                };
                errors.push(ImportError {
                    line: later.line,
                    column: at(Column::Address),
                    message: format!(
                        "`{}` ({} {}{}) overlaps `{}` on line {} ({} {}{}); expected each register in one tag",
                        later.name,
                        area_name(later.area),
                        span_text(later),
                        later.bit.map(|b| format!(" bit {b}")).unwrap_or_default(),
                        earlier.name,
                        earlier.line,
                        area_name(earlier.area),
                        span_text(earlier),
                        earlier.bit.map(|b| format!(" bit {b}")).unwrap_or_default(),
                    ),
                });
            }
            open.push(tag);
        }
    }
}

fn span_text(tag: &Tag) -> String {
    let end = tag.address + tag.span() - 1;
    if end == tag.address {
        format!("{}", tag.address)
    } else {
        format!("{}-{end}", tag.address)
    }
}

fn area_key(area: RegisterArea) -> u8 {
    match area {
        RegisterArea::Coil => 0,
        RegisterArea::DiscreteInput => 1,
        RegisterArea::InputRegister => 3,
        RegisterArea::HoldingRegister => 4,
    }
}

fn area_name(area: RegisterArea) -> &'static str {
    match area {
        RegisterArea::Coil => "coil",
        RegisterArea::DiscreteInput => "discrete_input",
        RegisterArea::HoldingRegister => "holding_register",
        RegisterArea::InputRegister => "input_register",
    }
}

fn parse_area(text: &str) -> Option<RegisterArea> {
    use RegisterArea as A;
    Some(match fold(text).as_str() {
        "coil" | "coils" | "co" | "0x" | "fc1" | "coilstatus" | "digitaloutput" | "do" => A::Coil,
        "discreteinput" | "discreteinputs" | "di" | "1x" | "fc2" | "inputstatus"
        | "digitalinput" => A::DiscreteInput,
        "inputregister" | "inputregisters" | "ir" | "3x" | "fc4" | "input" | "inputreg" => {
            A::InputRegister
        }
        "holdingregister" | "holdingregisters" | "hr" | "4x" | "fc3" | "holding" | "holdingreg" => {
            A::HoldingRegister
        }
        _ => return None,
    })
}

/// A Modicon reference: 5 digits (`40001`: area digit, then register 1-9999) or 6 digits
/// (`400001`: register 1-65536). Returns the area and the one-based register.
fn modicon(text: &str, n: i64) -> Option<(RegisterArea, i64)> {
    let digits = text.trim();
    let (scale, len) = match digits.len() {
        5 => (10_000, 5),
        6 => (100_000, 6),
        _ => return None,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() != len {
        return None;
    }
    let area = match n / scale {
        0 => RegisterArea::Coil,
        1 => RegisterArea::DiscreteInput,
        3 => RegisterArea::InputRegister,
        4 => RegisterArea::HoldingRegister,
        _ => return None,
    };
    let register = n % scale;
    (1..=65536).contains(&register).then_some((area, register))
}

fn parse_integer(text: &str) -> Option<i64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// A number, with a decimal comma read as a point when there is no point (`0,1`).
fn parse_number(text: &str) -> Option<f64> {
    let text = text.trim();
    text.parse::<f64>().ok().or_else(|| {
        (text.matches(',').count() == 1 && !text.contains('.'))
            .then(|| text.replace(',', ".").parse().ok())
            .flatten()
    })
}

fn parse_type(text: &str) -> Option<DataType> {
    use DataType as D;
    Some(match fold(text).as_str() {
        "bool" | "boolean" | "bit" | "digital" => D::Bool,
        "u16" | "uint16" | "uint" | "word" | "unsigned" | "unsigned16" | "ushort" => D::U16,
        "i16" | "int16" | "int" | "short" | "signed" | "signed16" | "integer" => D::I16,
        "u32" | "uint32" | "udint" | "dword" | "ulong" | "unsigned32" => D::U32,
        "i32" | "int32" | "dint" | "long" | "signed32" => D::I32,
        "u64" | "uint64" | "ulint" | "lword" | "unsigned64" => D::U64,
        "i64" | "int64" | "lint" | "signed64" => D::I64,
        "f32" | "float" | "float32" | "real" | "single" | "ieee754" => D::F32,
        "f64" | "double" | "float64" | "lreal" => D::F64,
        "string" | "str" | "ascii" | "text" | "char" | "chars" => D::String,
        _ => return None,
    })
}

fn parse_order(text: &str) -> Option<ByteOrder> {
    use ByteOrder as O;
    Some(match fold(text).as_str() {
        "abcd" | "big" | "bigendian" | "be" | "1234" | "msbfirst" | "none" | "noswap"
        | "normal" => O::ABCD,
        "cdab" | "wordswap" | "wordswapped" | "swapped" | "littlewordorder" | "3412"
        | "lowwordfirst" => O::CDAB,
        "badc" | "byteswap" | "byteswapped" | "2143" => O::BADC,
        "dcba" | "little" | "littleendian" | "le" | "4321" | "bytewordswap" => O::DCBA,
        _ => return None,
    })
}

fn parse_role(text: &str) -> Option<TagRole> {
    use serde::Deserialize as _;
    let folded = text.trim().to_lowercase().replace([' ', '-'], "_");
    let folded = match folded.as_str() {
        "sp" => "setpoint",
        "pv" | "process_value" => "measurement",
        "alarm" => "alarm_active",
        "state" => "status",
        other => other,
    }
    .to_owned();
    TagRole::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(&folded))
        .ok()
}

fn parse_states(text: &str) -> Result<BTreeMap<i64, String>, String> {
    let separator = ['|', ';', ',']
        .into_iter()
        .find(|s| text.contains(*s))
        .unwrap_or('|');
    let mut states = BTreeMap::new();
    for item in text
        .split(separator)
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some((key, name)) = item.split_once(['=', ':']) else {
            return Err(format!(
                "`{}` is no RAW=NAME pair; expected states such as `0=idle|1=run`",
                item.escape_debug()
            ));
        };
        let Ok(key) = key.trim().parse::<i64>() else {
            return Err(format!(
                "`{}` is no integer raw value; expected states such as `0=idle|1=run`",
                key.trim().escape_debug()
            ));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("raw value {key} has an empty name"));
        }
        if states.insert(key, name.to_owned()).is_some() {
            return Err(format!("raw value {key} is named twice"));
        }
    }
    Ok(states)
}

/// The profile text of validated tags.
fn render(tags: &[Tag], options: &ImportOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported by `linesentry import modbus` from {}.\n# Check every role (suggested ones are marked), then: linesentry probe, linesentry validate --profile.\n",
        options.source_name
    );
    let _ = writeln!(out, "[profile]");
    let _ = writeln!(out, "name = {}", toml_str(&options.profile_name));
    let _ = writeln!(
        out,
        "description = {}",
        toml_str(&format!("Imported from {}", options.source_name))
    );
    let _ = writeln!(out, "protocol = \"modbus\"");
    if options.one_based {
        let _ = writeln!(out, "addressing = \"one_based\"");
    }
    for tag in tags {
        out.push('\n');
        let _ = writeln!(out, "# line {}", tag.line);
        if let Some(d) = &tag.description {
            for line in d.lines() {
                let _ = writeln!(out, "# {line}");
            }
        }
        if let Some(why) = &tag.suggested {
            let _ = writeln!(out, "# role: suggested ({why}); check it");
        }
        let _ = writeln!(out, "[[tags]]");
        let _ = writeln!(out, "name = {}", toml_str(&tag.name));
        let _ = writeln!(out, "role = \"{}\"", tag.role);
        let _ = writeln!(out, "type = \"{}\"", tag.data_type.name());
        if let Some(order) = tag.order {
            let _ = writeln!(out, "order = \"{order:?}\"");
        }
        let _ = writeln!(out, "area = \"{}\"", area_name(tag.area));
        let _ = writeln!(out, "address = {}", tag.address);
        if let Some(bit) = tag.bit {
            let _ = writeln!(out, "bit = {bit}");
        }
        if tag.data_type == DataType::String {
            let _ = writeln!(out, "length = {}", tag.length);
        }
        if let Some(scale) = tag.scale {
            let _ = writeln!(out, "scale = {}", toml_float(scale));
        }
        if let Some(offset) = tag.offset {
            let _ = writeln!(out, "offset = {}", toml_float(offset));
        }
        if let Some(unit) = &tag.unit {
            let _ = writeln!(out, "unit = {}", toml_str(unit));
        }
        if let Some((lo, hi)) = tag.limits {
            let _ = writeln!(
                out,
                "limits = {{ min = {}, max = {} }}",
                toml_float(lo),
                toml_float(hi)
            );
        }
        if !tag.states.is_empty() {
            let states: Vec<String> = tag
                .states
                .iter()
                .map(|(k, v)| format!("{k} = {}", toml_str(v)))
                .collect();
            let _ = writeln!(out, "states = {{ {} }}", states.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_profile;
    use crate::source::{ModbusAddress, Profile};
    use std::path::Path;

    fn options(one_based: bool) -> ImportOptions {
        ImportOptions {
            profile_name: "oven".into(),
            source_name: "map.csv".into(),
            one_based,
        }
    }

    fn load(imported: &Imported) -> Profile {
        parse_profile(Path::new("/d/oven.toml"), &imported.text)
            .unwrap_or_else(|e| panic!("{e}\n{}", imported.text))
    }

    fn errors(csv: &str, one_based: bool) -> Vec<String> {
        import(csv.as_bytes(), &options(one_based))
            .unwrap_err()
            .to_string()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_missing_column_a_row_needs_is_reported_at_the_row_without_a_column() {
        let csv =
            "name,area,address,type,order,scale,offset,unit,role,min,max,states,description\n\
                   Zone 1 Temp,input_register,100,f32,CDAB,,,°C,measurement,0,300,,zone one\n\
                   zone1_sp,holding_register,100,f32,CDAB,,,°C,setpoint,25,200,,\n\
                   oven_state,input_register,1,u16,,,,,status,,,0=idle|1=heating|5=fault,\n\
                   speed,input_register,121,u16,,\"0,1\",-5,cm/min,measurement,,,,\n\
                   count,input_register,311,u64,DCBA,,,,counter,,,,\n\
                   door,discrete_input,1,bool,,,,,status,,,,\n\
                   ready,holding_register,7,bool,,,,,status,,,,\n\
                   firmware,input_register,321,string,,,,,firmware,,,,\n";
        let err = errors(csv, false);
        // `ready` lacks its bit, `firmware` its length: both reported, at their columns.
        assert_eq!(err.len(), 2, "{err:?}");
        assert_eq!(
            err[0],
            "map.csv:8: a bool in a register needs its bit number (0-15, in a `bit` column or as REGISTER.BIT)",
            "{err:?}"
        );
        assert_eq!(
            err[1], "map.csv:9: a string needs its length in registers (1-125)",
            "{err:?}"
        );
    }

    #[test]
    fn a_complete_map_loads_through_the_profile_loader_with_the_values_of_the_file() {
        let csv = "name,area,address,type,order,scale,offset,unit,role,min,max,states,description,bit,length\n\
                   Zone 1 Temp,input_register,100,f32,CDAB,,,°C,measurement,0,300,,zone one,,\n\
                   zone1_sp,holding_register,100,f32,CDAB,,,°C,setpoint,25,200,,,,\n\
                   oven_state,input_register,1,u16,,,,,status,,,0=idle|1=heating|5=fault,,,\n\
                   speed,input_register,121,u16,,\"0,1\",-5,cm/min,measurement,,,,,,\n\
                   count,input_register,311,u64,DCBA,,,,counter,,,,,,\n\
                   door,discrete_input,1,bool,,,,,status,,,,,,\n\
                   ready,holding_register,7,bool,,,,,status,,,,,3,\n\
                   firmware,input_register,321,string,,,,,firmware,,,,,,6\n";
        let imported = import(csv.as_bytes(), &options(false)).unwrap();
        let profile = load(&imported);
        assert_eq!(profile.tags.len(), 8);
        let t = profile.tag("zone_1_temp").unwrap();
        assert_eq!(t.order, ByteOrder::CDAB);
        assert_eq!(t.unit.as_deref(), Some("°C"));
        assert_eq!(t.limits.map(|l| (l.min, l.max)), Some((0.0, 300.0)));
        assert_eq!(
            t.modbus,
            Some(ModbusAddress {
                area: RegisterArea::InputRegister,
                index: 100,
                bit: None
            })
        );
        let s = profile.tag("speed").unwrap();
        assert!((s.scale - 0.1).abs() < 1e-12 && (s.offset + 5.0).abs() < 1e-12);
        assert_eq!(
            profile.tag("oven_state").unwrap().state_name(5),
            Some("fault")
        );
        assert_eq!(profile.tag("ready").unwrap().modbus.unwrap().bit, Some(3));
        assert_eq!(profile.tag("firmware").unwrap().length, 6);
        assert_eq!(profile.tag("count").unwrap().order, ByteOrder::DCBA);
        assert_eq!(imported.lines, [2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(imported.text.contains("# zone one"));
    }

    #[test]
    fn vendor_aliases_a_bom_crlf_semicolons_and_one_based_modicon_references_are_read() {
        let csv = "\u{feff}Tag Name;Register;Data Type;Word Order;Multiplier;Eng. Units;Low Limit;High Limit;Access\r\n\
                   Zone1 Temp;30101;REAL;word swap;1;°C;0;300;R\r\n\
                   Zone1_SP;40101;Float;Word Swap;;°C;25;200;RW\r\n\
                   Cycle Counter;30311;UDINT;CDAB;;;;;R\r\n\
                   Heater On;00001;BOOL;;;;;;RW\r\n";
        let imported = import(csv.as_bytes(), &options(true)).unwrap();
        let profile = load(&imported);
        let temp = profile.tag("zone1_temp").unwrap();
        assert_eq!(
            temp.modbus.unwrap(),
            ModbusAddress {
                area: RegisterArea::InputRegister,
                index: 100,
                bit: None
            }
        );
        assert_eq!(temp.order, ByteOrder::CDAB);
        assert_eq!(temp.role, TagRole::Measurement);
        let sp = profile.tag("zone1_sp").unwrap();
        assert_eq!(sp.role, TagRole::Setpoint, "suggested from the name");
        assert_eq!(sp.modbus.unwrap().area, RegisterArea::HoldingRegister);
        assert_eq!(profile.tag("cycle_counter").unwrap().role, TagRole::Counter);
        assert_eq!(
            profile.tag("heater_on").unwrap().modbus.unwrap().area,
            RegisterArea::Coil
        );
        assert!(imported.text.contains("addressing = \"one_based\"\n"));
        assert!(
            imported.text.contains("address = 101\n"),
            "one-based, as in the file"
        );
        assert!(
            imported
                .notes
                .iter()
                .any(|n| n.contains("`Access` is not a profile column")),
            "{:?}",
            imported.notes
        );
        assert!(imported
            .text
            .contains("# role: suggested (a setpoint, from the name); check it"));
    }

    #[test]
    fn every_bad_row_is_reported_at_once_with_its_line_and_column() {
        let csv = "name,area,address,type,scale,role\n\
                   good,holding_register,1,u16,,measurement\n\
                   bad_area,holding_regs,2,u16,,measurement\n\
                   bad_type,holding_register,3,u17,,measurement\n\
                   bad_scale,holding_register,4,u16,x,measurement\n\
                   ,holding_register,5,u16,,measurement\n\
                   bad_role,holding_register,6,u16,,boss\n\
                   bad_addr,holding_register,70000,u16,,measurement\n";
        let err = errors(csv, false);
        assert_eq!(err.len(), 6, "{err:#?}");
        assert!(
            err[0].starts_with("map.csv:3:2: `area`: unknown area `holding_regs`"),
            "{err:#?}"
        );
        assert!(
            err[1].starts_with("map.csv:4:4: `type`: unknown type `u17`"),
            "{err:#?}"
        );
        assert!(
            err[2].starts_with("map.csv:5:5: `scale`: expected a number, found `x`"),
            "{err:#?}"
        );
        assert!(
            err[3].starts_with("map.csv:6:1: `name`: empty name"),
            "{err:#?}"
        );
        assert!(
            err[4].starts_with("map.csv:7:6: `role`: unknown role `boss`"),
            "{err:#?}"
        );
        assert!(
            err[5].starts_with("map.csv:8:3: `address`: expected an address between 0 and 65535"),
            "{err:#?}"
        );
    }

    #[test]
    fn duplicate_names_and_overlapping_registers_name_both_rows() {
        let csv = "name,area,address,type\n\
                   Temp,input_register,10,f32\n\
                   temp,input_register,20,u16\n\
                   pressure,input_register,11,u16\n\
                   status_word,holding_register,5,u16\n\
                   ready,holding_register,5.0,bool\n\
                   running,holding_register,5.1,bool\n\
                   also_ready,holding_register,5.0,bool\n\
                   coil_a,coil,3,bool\n\
                   coil_b,coil,3,bool\n";
        let err = errors(csv, false);
        assert_eq!(err.len(), 4, "{err:#?}");
        assert!(
            err[0].starts_with("map.csv:3:1: `name`: duplicate tag name `temp` (first on line 2)"),
            "{err:#?}"
        );
        assert!(err[1].contains("map.csv:4:3: `address`: `pressure` (input_register 11) overlaps `temp` on line 2 (input_register 10-11)"), "{err:#?}");
        assert!(err[2].contains("map.csv:8:3: `address`: `also_ready` (holding_register 5 bit 0) overlaps `ready` on line 6"), "{err:#?}");
        assert!(
            err[3].contains("`coil_b` (coil 3) overlaps `coil_a` on line 9"),
            "{err:#?}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_register_map_says_what_is_missing() {
        let err = errors("foo;bar\n1;2\n", false);
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(err[0].starts_with("map.csv:1: no `name` column"), "{err:?}");
        assert!(err[0].contains("`name;area;address;type`"), "{err:?}");
        let err = errors("name,address\n", false);
        assert!(err[0].contains("no rows after the header line"), "{err:?}");
        let err = import(b"name,unit\nx,\xB0C\n", &options(false))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("map.csv:2: the file is not UTF-8"), "{err}");
    }

    #[test]
    fn keys_that_do_not_apply_to_the_type_are_errors_unless_neutral() {
        let csv = "name,area,address,type,order,scale,length,min,max,role\n\
                   a,holding_register,1,u16,ABCD,1,,,,measurement\n\
                   b,holding_register,2,u16,DCBA,,,,,measurement\n\
                   c,coil,1,bool,,2,,,,status\n\
                   d,holding_register,3,u16,,,3,,,measurement\n\
                   e,holding_register,10,u16,,,,5,,measurement\n\
                   f,holding_register,11,u16,,,,,,status\n";
        let err = errors(csv, false);
        assert_eq!(err.len(), 5, "{err:#?}");
        assert!(
            err[0].starts_with("map.csv:3:5: `order`: DCBA swaps the bytes of a 16-bit u16 value"),
            "{err:#?}"
        );
        assert!(
            err[1].starts_with("map.csv:4:6: `scale`: a scale only applies to numeric types"),
            "{err:#?}"
        );
        assert!(err[2].starts_with("map.csv:5:7: `length`"), "{err:#?}");
        assert!(
            err[3].starts_with("map.csv:6:9: `max`: a min without a max"),
            "{err:#?}"
        );
        assert!(err[4].starts_with("map.csv:7:"), "{err:#?}");
        assert!(err[4].contains("needs states"), "{err:#?}");
    }

    #[test]
    fn a_loader_key_path_maps_back_to_the_line_of_its_row() {
        let imported = import(b"name,area,address\na,coil,1\nb,coil,2\n", &options(false)).unwrap();
        assert_eq!(imported.line_of("tags[1].name"), Some(3));
        assert_eq!(imported.line_of("profile.name"), None);
    }
}
