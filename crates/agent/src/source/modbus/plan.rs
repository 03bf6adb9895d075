//! Read planning: coalescing a station's tags into as few Modbus requests as possible.
//!
//! Every request costs a round trip (on RTU, several character times of silence as well),
//! so the planner trades a few unused registers for fewer requests: tags of one area are
//! joined into a block when their spans overlap or are at most `max_gap` registers (bits)
//! apart, as long as the block stays within one request's size limit.
//!
//! The algorithm is greedy over the tags sorted by start address (longest first at equal
//! starts): a tag joins the open block if the gap before it is small enough and the grown
//! block still fits, otherwise it opens the next block. For tags that do not overlap this
//! gives the fewest blocks (every block is a run of consecutive tags, and taking the longest
//! feasible run first never hurts); overlapping tags are still covered, at worst with one
//! extra request.
//!
//! A tag is never split across requests, since a value read in two halves can tear. A tag
//! larger than the configured limit therefore gets a block of its own as long as one
//! request can carry it at all ([`MAX_READ_REGISTERS`], [`MAX_READ_BITS`]); tags lying
//! entirely within it ride along. Anything larger is an error naming the tag.
//!
//! Addresses are handled as `u32` internally, so a tag ending at 65535 neither overflows nor
//! wraps to 0; a tag running past 65535 is an error.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::source::{ModbusAddress, RegisterArea};

/// Most registers one FC 3 / FC 4 request may read (Modbus application protocol, 6.3).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Most bits one FC 1 / FC 2 request may read (Modbus application protocol, 6.1).
pub const MAX_READ_BITS: u16 = 2000;
/// Unused registers (bits) read between two tags to join them, by default.
pub const DEFAULT_MAX_GAP: u16 = 10;

/// One past the last protocol address.
const ADDRESS_SPACE: u32 = 1 << 16;

/// How large blocks may grow and how far apart tags may be to share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanLimits {
    /// Registers per request, 1 to 125; default 125. Some devices accept fewer.
    pub max_registers: u16,
    /// Bits per request, 1 to 2000; default 2000.
    pub max_bits: u16,
    /// Unused registers (bits) that may be read between two tags to join them; default 10.
    pub max_gap: u16,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            max_registers: MAX_READ_REGISTERS,
            max_bits: MAX_READ_BITS,
            max_gap: DEFAULT_MAX_GAP,
        }
    }
}

impl PlanLimits {
    pub fn validate(&self) -> Result<(), PlanError> {
        for (field, value, max) in [
            ("max_registers", self.max_registers, MAX_READ_REGISTERS),
            ("max_bits", self.max_bits, MAX_READ_BITS),
        ] {
            if value == 0 || value > max {
                return Err(PlanError::InvalidLimit { field, value, max });
            }
        }
        Ok(())
    }

    /// Size limit for coalescing in `area`.
    fn limit(self, area: RegisterArea) -> u16 {
        if area.is_bit() {
            self.max_bits
        } else {
            self.max_registers
        }
    }
}

/// What the planner needs to know of one tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagSpan {
    /// The caller's index of the tag, reported back in [`ReadBlock::tags`].
    pub tag: usize,
    pub address: ModbusAddress,
    /// Registers (bits, in a bit area) the tag spans.
    pub len: u16,
}

impl TagSpan {
    pub fn new(tag: usize, address: ModbusAddress, len: u16) -> Self {
        TagSpan { tag, address, len }
    }

    fn start(&self) -> u32 {
        u32::from(self.address.index)
    }

    /// One past the last address; up to 65536, so never wraps.
    fn end(&self) -> u32 {
        self.start() + u32::from(self.len)
    }
}

/// One read request: `count` registers (bits) of `area` from `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    pub area: RegisterArea,
    pub start: u16,
    pub count: u16,
    /// Indices ([`TagSpan::tag`]) of the tags the block serves, in address order.
    pub tags: Vec<usize>,
}

impl ReadBlock {
    /// One past the last address read; up to 65536.
    pub fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }

    /// Whether `span` lies entirely within this block's area and range.
    pub fn covers(&self, span: &TagSpan) -> bool {
        span.address.area == self.area
            && span.start() >= u32::from(self.start)
            && span.end() <= self.end()
    }

    /// Checks a response's length (registers or bits) against the block.
    pub fn check_response(&self, found: usize) -> Result<(), ExtractError> {
        if found == usize::from(self.count) {
            Ok(())
        } else {
            Err(ExtractError::ResponseLength {
                area: self.area,
                start: self.start,
                expected: usize::from(self.count),
                found,
            })
        }
    }
}

/// Why a set of tags cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("plan limit {field} is {value}, expected 1 to {max}")]
    InvalidLimit {
        field: &'static str,
        value: u16,
        max: u16,
    },
    #[error("tag {tag} spans no {}, expected at least 1", unit(*.area))]
    EmptyTag { tag: usize, area: RegisterArea },
    #[error(
        "tag {tag} spans {len} {}, but one {area:?} request reads at most {max}",
        unit(*.area)
    )]
    TagTooLarge {
        tag: usize,
        area: RegisterArea,
        len: u16,
        max: u16,
    },
    #[error(
        "tag {tag} starts at {area:?} {index} and spans {len} {}, past the last address 65535",
        unit(*.area)
    )]
    PastEndOfAddressSpace {
        tag: usize,
        area: RegisterArea,
        index: u16,
        len: u16,
    },
}

/// Why a tag's part of a block response could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ExtractError {
    #[error("response to the {area:?} block at {start} has {found} values, expected {expected}")]
    ResponseLength {
        area: RegisterArea,
        start: u16,
        expected: usize,
        found: usize,
    },
    #[error(
        "tag {tag} ({tag_area:?} {index}, {len} long) is not inside the {area:?} block at {start} \
         ({count} long)"
    )]
    NotInBlock {
        tag: usize,
        tag_area: RegisterArea,
        index: u16,
        len: u16,
        area: RegisterArea,
        start: u16,
        count: u16,
    },
}

/// Plans the reads for `tags`: blocks sorted by area (coils, discrete inputs, holding
/// registers, input registers) then start address, each tag in exactly one block of its area.
///
/// Fails on invalid limits or a tag that no single request can read; the error names the
/// first such tag in input order.
pub fn plan_reads(tags: &[TagSpan], limits: &PlanLimits) -> Result<Vec<ReadBlock>, PlanError> {
    limits.validate()?;
    for span in tags {
        check_span(span)?;
    }

    let mut sorted: Vec<&TagSpan> = tags.iter().collect();
    sorted.sort_by_key(|s| {
        (
            area_rank(s.address.area),
            s.start(),
            Reverse(s.end()),
            s.tag,
        )
    });

    let mut blocks = Vec::new();
    let mut open: Option<Open> = None;
    for span in sorted {
        if let Some(block) = open.as_mut() {
            if block.admits(span, *limits) {
                block.end = block.end.max(span.end());
                block.tags.push(span.tag);
                continue;
            }
        }
        blocks.extend(open.take().map(Open::close));
        open = Some(Open {
            area: span.address.area,
            start: span.start(),
            end: span.end(),
            tags: vec![span.tag],
        });
    }
    blocks.extend(open.map(Open::close));
    Ok(blocks)
}

/// The part of `response` (the registers or bits read for `block`) that holds `span`.
///
/// A response of the wrong length fails every tag of its block, and only those: the caller
/// keeps decoding the other blocks.
pub fn extract<'a, T>(
    block: &ReadBlock,
    response: &'a [T],
    span: &TagSpan,
) -> Result<&'a [T], ExtractError> {
    block.check_response(response.len())?;
    if !block.covers(span) {
        return Err(ExtractError::NotInBlock {
            tag: span.tag,
            tag_area: span.address.area,
            index: span.address.index,
            len: span.len,
            area: block.area,
            start: block.start,
            count: block.count,
        });
    }
    let from = usize::from(span.address.index - block.start);
    Ok(&response[from..from + usize::from(span.len)])
}

/// A block being grown; addresses as u32 so 65536 (one past the end) is representable.
struct Open {
    area: RegisterArea,
    start: u32,
    end: u32,
    tags: Vec<usize>,
}

impl Open {
    /// `span` starts at or after `self.start` (the tags are sorted).
    fn admits(&self, span: &TagSpan, limits: PlanLimits) -> bool {
        let close_enough = span.start() <= self.end + u32::from(limits.max_gap);
        let end = self.end.max(span.end());
        // A tag inside the block costs nothing, even if an oversized tag made the block.
        let fits = end - self.start <= u32::from(limits.limit(self.area)) || end == self.end;
        span.address.area == self.area && close_enough && fits
    }

    fn close(self) -> ReadBlock {
        // Invariants: start < 65536 and end - start <= 2000, from `check_span` and `admits`.
        ReadBlock {
            area: self.area,
            start: self.start as u16,
            count: (self.end - self.start) as u16,
            tags: self.tags,
        }
    }
}

fn check_span(span: &TagSpan) -> Result<(), PlanError> {
    let area = span.address.area;
    let max = protocol_max(area);
    if span.len == 0 {
        Err(PlanError::EmptyTag {
            tag: span.tag,
            area,
        })
    } else if span.len > max {
        Err(PlanError::TagTooLarge {
            tag: span.tag,
            area,
            len: span.len,
            max,
        })
    } else if span.end() > ADDRESS_SPACE {
        Err(PlanError::PastEndOfAddressSpace {
            tag: span.tag,
            area,
            index: span.address.index,
            len: span.len,
        })
    } else {
        Ok(())
    }
}

fn protocol_max(area: RegisterArea) -> u16 {
    if area.is_bit() {
        MAX_READ_BITS
    } else {
        MAX_READ_REGISTERS
    }
}

/// Blocks are ordered by function code: FC 1, 2, 3, 4.
fn area_rank(area: RegisterArea) -> u8 {
    match area {
        RegisterArea::Coil => 0,
        RegisterArea::DiscreteInput => 1,
        RegisterArea::HoldingRegister => 2,
        RegisterArea::InputRegister => 3,
    }
}

fn unit(area: RegisterArea) -> &'static str {
    if area.is_bit() {
        "bits"
    } else {
        "registers"
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const AREAS: [RegisterArea; 4] = [
        RegisterArea::Coil,
        RegisterArea::DiscreteInput,
        RegisterArea::HoldingRegister,
        RegisterArea::InputRegister,
    ];

    fn span(tag: usize, area: RegisterArea, index: u16, len: u16) -> TagSpan {
        TagSpan::new(
            tag,
            ModbusAddress {
                area,
                index,
                bit: None,
            },
            len,
        )
    }

    fn hr(tag: usize, index: u16, len: u16) -> TagSpan {
        span(tag, RegisterArea::HoldingRegister, index, len)
    }

    fn block(area: RegisterArea, start: u16, count: u16, tags: &[usize]) -> ReadBlock {
        ReadBlock {
            area,
            start,
            count,
            tags: tags.to_vec(),
        }
    }

    fn holding(start: u16, count: u16, tags: &[usize]) -> ReadBlock {
        block(RegisterArea::HoldingRegister, start, count, tags)
    }

    fn plan(tags: &[TagSpan]) -> Vec<ReadBlock> {
        plan_reads(tags, &PlanLimits::default()).unwrap()
    }

    #[test]
    fn the_default_limits_are_125_registers_2000_bits_and_a_gap_of_10() {
        let limits = PlanLimits::default();
        assert_eq!(
            (limits.max_registers, limits.max_bits, limits.max_gap),
            (125, 2000, 10)
        );
        let parsed: PlanLimits = serde_json::from_str(r#"{"max_gap": 3}"#).unwrap();
        assert_eq!(
            parsed,
            PlanLimits {
                max_gap: 3,
                ..limits
            }
        );
        assert!(serde_json::from_str::<PlanLimits>(r#"{"max_gaps": 3}"#).is_err());
    }

    #[test]
    fn adjacent_tags_coalesce_into_one_block() {
        let tags = [hr(0, 100, 2), hr(1, 102, 2), hr(2, 104, 1)];
        assert_eq!(plan(&tags), vec![holding(100, 5, &[0, 1, 2])]);
    }

    #[test]
    fn tags_up_to_max_gap_apart_join_and_the_gap_is_read() {
        let tags = [hr(0, 0, 1), hr(1, 11, 1)];
        assert_eq!(plan(&tags), vec![holding(0, 12, &[0, 1])]);
    }

    #[test]
    fn a_gap_larger_than_max_gap_splits_the_block() {
        let tags = [hr(0, 0, 1), hr(1, 12, 1)];
        assert_eq!(plan(&tags), vec![holding(0, 1, &[0]), holding(12, 1, &[1])]);
        let no_gap = PlanLimits {
            max_gap: 0,
            ..PlanLimits::default()
        };
        let tags = [hr(0, 0, 1), hr(1, 1, 1), hr(2, 3, 1)];
        assert_eq!(
            plan_reads(&tags, &no_gap).unwrap(),
            vec![holding(0, 2, &[0, 1]), holding(3, 1, &[2])]
        );
    }

    #[test]
    fn blocks_never_exceed_125_registers() {
        let tags: Vec<TagSpan> = (0..200).map(|i| hr(i, i as u16, 1)).collect();
        let blocks = plan(&tags);
        assert_eq!(blocks.len(), 2);
        assert_eq!((blocks[0].start, blocks[0].count), (0, 125));
        assert_eq!((blocks[1].start, blocks[1].count), (125, 75));
    }

    #[test]
    fn a_tag_that_would_cross_the_limit_starts_a_new_block_rather_than_being_split() {
        let limits = PlanLimits {
            max_registers: 10,
            ..PlanLimits::default()
        };
        let tags = [hr(0, 0, 4), hr(1, 4, 4), hr(2, 8, 4)];
        assert_eq!(
            plan_reads(&tags, &limits).unwrap(),
            vec![holding(0, 8, &[0, 1]), holding(8, 4, &[2])]
        );
    }

    #[test]
    fn a_string_longer_than_the_limit_gets_its_own_block_and_tags_inside_it_ride_along() {
        let limits = PlanLimits {
            max_registers: 10,
            ..PlanLimits::default()
        };
        let tags = [hr(0, 98, 1), hr(1, 100, 60), hr(2, 105, 1), hr(3, 100, 1)];
        assert_eq!(
            plan_reads(&tags, &limits).unwrap(),
            vec![holding(98, 1, &[0]), holding(100, 60, &[1, 3, 2])]
        );
    }

    #[test]
    fn a_tag_no_single_request_can_read_is_an_error_naming_the_tag() {
        let err = plan_reads(&[hr(0, 0, 1), hr(7, 10, 126)], &PlanLimits::default()).unwrap_err();
        assert_eq!(
            err,
            PlanError::TagTooLarge {
                tag: 7,
                area: RegisterArea::HoldingRegister,
                len: 126,
                max: 125
            }
        );
        assert_eq!(
            err.to_string(),
            "tag 7 spans 126 registers, but one HoldingRegister request reads at most 125"
        );
        let coils = span(3, RegisterArea::Coil, 0, 2001);
        assert!(matches!(
            plan_reads(&[coils], &PlanLimits::default()),
            Err(PlanError::TagTooLarge {
                tag: 3,
                max: 2000,
                ..
            })
        ));
    }

    #[test]
    fn bit_blocks_never_exceed_2000_bits() {
        let tags: Vec<TagSpan> = (0..2500)
            .map(|i| span(i, RegisterArea::Coil, i as u16, 1))
            .collect();
        let blocks = plan(&tags);
        let shape: Vec<_> = blocks
            .iter()
            .map(|b| (b.start, b.count, b.tags.len()))
            .collect();
        assert_eq!(shape, vec![(0, 2000, 2000), (2000, 500, 500)]);
    }

    #[test]
    fn bools_on_bits_of_the_same_register_share_one_read_of_it() {
        let bit = |tag, bit| {
            TagSpan::new(
                tag,
                ModbusAddress {
                    area: RegisterArea::HoldingRegister,
                    index: 40,
                    bit: Some(bit),
                },
                1,
            )
        };
        let tags = [bit(0, 0), bit(1, 7), bit(2, 15)];
        assert_eq!(plan(&tags), vec![holding(40, 1, &[0, 1, 2])]);
    }

    #[test]
    fn different_areas_never_share_a_block_and_come_in_function_code_order() {
        let tags = [
            hr(0, 0, 1),
            span(1, RegisterArea::InputRegister, 0, 1),
            span(2, RegisterArea::DiscreteInput, 0, 1),
            span(3, RegisterArea::Coil, 0, 1),
            hr(4, 1, 1),
        ];
        assert_eq!(
            plan(&tags),
            vec![
                block(RegisterArea::Coil, 0, 1, &[3]),
                block(RegisterArea::DiscreteInput, 0, 1, &[2]),
                holding(0, 2, &[0, 4]),
                block(RegisterArea::InputRegister, 0, 1, &[1]),
            ]
        );
    }

    #[test]
    fn blocks_come_sorted_by_start_whatever_the_input_order() {
        let tags = [hr(0, 500, 1), hr(1, 0, 1), hr(2, 250, 1)];
        let starts: Vec<u16> = plan(&tags).iter().map(|b| b.start).collect();
        assert_eq!(starts, vec![0, 250, 500]);
    }

    #[test]
    fn tags_at_the_top_of_the_address_space_plan_without_overflow() {
        let tags = [hr(0, 65_535, 1), hr(1, 65_530, 4), hr(2, 65_411, 1)];
        let blocks = plan(&tags);
        assert_eq!(
            blocks,
            vec![holding(65_411, 1, &[2]), holding(65_530, 6, &[1, 0])]
        );
        assert_eq!(blocks[1].end(), 65_536);
        let wide = PlanLimits {
            max_gap: u16::MAX,
            ..PlanLimits::default()
        };
        assert_eq!(
            plan_reads(&tags, &wide).unwrap(),
            vec![holding(65_411, 125, &[2, 1, 0])]
        );
    }

    #[test]
    fn a_tag_running_past_65535_is_an_error_naming_the_tag() {
        let err = plan_reads(&[hr(4, 65_534, 4)], &PlanLimits::default()).unwrap_err();
        assert_eq!(
            err,
            PlanError::PastEndOfAddressSpace {
                tag: 4,
                area: RegisterArea::HoldingRegister,
                index: 65_534,
                len: 4
            }
        );
        assert!(err.to_string().contains("tag 4"));
    }

    #[test]
    fn a_tag_spanning_nothing_is_an_error() {
        assert_eq!(
            plan_reads(&[hr(2, 0, 0)], &PlanLimits::default()),
            Err(PlanError::EmptyTag {
                tag: 2,
                area: RegisterArea::HoldingRegister
            })
        );
    }

    #[test]
    fn limits_beyond_what_the_protocol_allows_are_rejected() {
        let bad = |limits: PlanLimits| plan_reads(&[], &limits).unwrap_err().to_string();
        let default = PlanLimits::default();
        assert_eq!(
            bad(PlanLimits {
                max_registers: 126,
                ..default
            }),
            "plan limit max_registers is 126, expected 1 to 125"
        );
        assert_eq!(
            bad(PlanLimits {
                max_registers: 0,
                ..default
            }),
            "plan limit max_registers is 0, expected 1 to 125"
        );
        assert_eq!(
            bad(PlanLimits {
                max_bits: 2001,
                ..default
            }),
            "plan limit max_bits is 2001, expected 1 to 2000"
        );
    }

    #[test]
    fn no_tags_plan_no_reads() {
        assert_eq!(plan(&[]), vec![]);
    }

    #[test]
    fn extract_maps_a_block_response_back_to_each_tag() {
        let tags = [hr(0, 10, 2), hr(1, 13, 1), hr(2, 10, 1)];
        let blocks = plan(&tags);
        assert_eq!(blocks, vec![holding(10, 4, &[0, 2, 1])]);
        let response = [0xA, 0xB, 0xC, 0xD];
        assert_eq!(
            extract(&blocks[0], &response, &tags[0]),
            Ok(&[0xA, 0xB][..])
        );
        assert_eq!(extract(&blocks[0], &response, &tags[1]), Ok(&[0xD][..]));
        assert_eq!(extract(&blocks[0], &response, &tags[2]), Ok(&[0xA][..]));
    }

    #[test]
    fn extract_maps_coil_responses_back_to_each_bit() {
        let tags = [
            span(0, RegisterArea::Coil, 7, 1),
            span(1, RegisterArea::Coil, 9, 1),
        ];
        let blocks = plan(&tags);
        let response = [true, false, false];
        assert_eq!(extract(&blocks[0], &response, &tags[0]), Ok(&[true][..]));
        assert_eq!(extract(&blocks[0], &response, &tags[1]), Ok(&[false][..]));
    }

    #[test]
    fn a_short_response_fails_the_tags_of_its_block_only() {
        let tags = [hr(0, 0, 2), hr(1, 1000, 2)];
        let blocks = plan(&tags);
        let responses: [&[u16]; 2] = [&[1, 2], &[3]];
        let results: Vec<_> = tags
            .iter()
            .zip(&blocks)
            .zip(responses)
            .map(|((tag, block), response)| extract(block, response, tag))
            .collect();
        assert_eq!(results[0], Ok(&[1, 2][..]));
        assert_eq!(
            results[1],
            Err(ExtractError::ResponseLength {
                area: RegisterArea::HoldingRegister,
                start: 1000,
                expected: 2,
                found: 1
            })
        );
        assert_eq!(
            results[1].as_ref().unwrap_err().to_string(),
            "response to the HoldingRegister block at 1000 has 1 values, expected 2"
        );
    }

    #[test]
    fn extracting_a_tag_from_a_block_that_does_not_hold_it_is_an_error() {
        let blocks = plan(&[hr(0, 0, 2)]);
        let outside = [hr(1, 1, 2), span(2, RegisterArea::InputRegister, 0, 1)];
        for tag in &outside {
            assert!(matches!(
                extract(&blocks[0], &[0, 0], tag),
                Err(ExtractError::NotInBlock { .. })
            ));
        }
    }

    fn limits() -> impl Strategy<Value = PlanLimits> {
        (1u16..=MAX_READ_REGISTERS, 1u16..=MAX_READ_BITS, 0u16..=20).prop_map(
            |(max_registers, max_bits, max_gap)| PlanLimits {
                max_registers,
                max_bits,
                max_gap,
            },
        )
    }

    /// Addresses cluster at both ends of the address space so tags meet and overlap.
    fn index() -> impl Strategy<Value = u16> {
        prop_oneof![0u16..300, 65_300u16..=65_535, any::<u16>()]
    }

    fn len(area: RegisterArea) -> BoxedStrategy<u16> {
        if area.is_bit() {
            prop_oneof![8 => 1u16..=2, 1 => 1u16..=2100].boxed()
        } else {
            prop_oneof![8 => 1u16..=4, 1 => 1u16..=130].boxed()
        }
    }

    fn any_tags() -> impl Strategy<Value = Vec<TagSpan>> {
        let one = prop::sample::select(AREAS.to_vec())
            .prop_flat_map(|area| (Just(area), index(), len(area)));
        prop::collection::vec(one, 0..80).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(tag, (area, index, len))| span(tag, area, index, len))
                .collect()
        })
    }

    /// Tags every request size can carry, moved down to end by 65535.
    fn valid_tags() -> impl Strategy<Value = Vec<TagSpan>> {
        any_tags().prop_map(|tags| {
            tags.into_iter()
                .map(|mut t| {
                    t.len = t.len.min(protocol_max(t.address.area));
                    let last_start = ADDRESS_SPACE - u32::from(t.len);
                    t.address.index = u32::from(t.address.index).min(last_start) as u16;
                    t
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn every_plan_covers_each_tag_exactly_once_within_the_limits(
            tags in valid_tags(),
            limits in limits(),
        ) {
            let blocks = plan_reads(&tags, &limits).unwrap();

            // Sorted by area, then start; no block empty or past 65535.
            for pair in blocks.windows(2) {
                let key = |b: &ReadBlock| (area_rank(b.area), b.start);
                prop_assert!(key(&pair[0]) < key(&pair[1]), "{:?}", pair);
            }
            for block in &blocks {
                prop_assert!(block.count >= 1 && !block.tags.is_empty());
                prop_assert!(block.end() <= ADDRESS_SPACE, "{:?}", block);
            }

            // Each tag in exactly one block, of its area, covering it.
            let mut seen = vec![0usize; tags.len()];
            for block in &blocks {
                for &tag in &block.tags {
                    seen[tag] += 1;
                    prop_assert!(block.covers(&tags[tag]), "{:?} {:?}", block, tags[tag]);
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1), "{:?}", seen);

            for block in &blocks {
                let mut spans: Vec<&TagSpan> = block.tags.iter().map(|&t| &tags[t]).collect();
                spans.sort_by_key(|s| s.start());
                // Within the limit, unless one tag larger than the limit is the whole block.
                let limit = limits.limit(block.area);
                prop_assert!(
                    block.count <= limit
                        || spans.iter().any(|s| s.start() == u32::from(block.start) && s.end() == block.end()),
                    "{:?} exceeds {}", block, limit
                );
                // Tight: the block starts at its first tag and ends with its last.
                prop_assert_eq!(spans[0].start(), u32::from(block.start));
                prop_assert_eq!(spans.iter().map(|s| s.end()).max(), Some(block.end()));
                // No more than max_gap unused addresses between tags.
                let mut end = spans[0].end();
                for s in &spans[1..] {
                    prop_assert!(s.start() <= end + u32::from(limits.max_gap), "{:?}", block);
                    end = end.max(s.end());
                }
                // The response maps back to exactly each tag's addresses.
                let response: Vec<u32> = (u32::from(block.start)..block.end()).collect();
                for s in &spans {
                    let expected: Vec<u32> = (s.start()..s.end()).collect();
                    prop_assert_eq!(extract(block, &response, s).unwrap(), &expected[..]);
                }
            }

            // Coalescing: no two neighbouring blocks could have been one.
            for pair in blocks.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                if a.area == b.area {
                    let gap_too_wide = u32::from(b.start) > a.end() + u32::from(limits.max_gap);
                    let too_big = a.end().max(b.end()) - u32::from(a.start) > u32::from(limits.limit(a.area));
                    prop_assert!(gap_too_wide || too_big, "{:?} and {:?} could merge", a, b);
                }
            }
        }

        #[test]
        fn planning_fails_exactly_when_some_tag_cannot_be_read_in_one_request(
            tags in any_tags(),
            limits in limits(),
        ) {
            let readable = |t: &TagSpan| t.len >= 1 && t.len <= protocol_max(t.address.area) && t.end() <= ADDRESS_SPACE;
            match plan_reads(&tags, &limits) {
                Ok(_) => prop_assert!(tags.iter().all(readable)),
                Err(PlanError::EmptyTag { tag, .. }
                    | PlanError::TagTooLarge { tag, .. }
                    | PlanError::PastEndOfAddressSpace { tag, .. }) => {
                    prop_assert!(!readable(&tags[tag]));
                    prop_assert!(tags[..tag].iter().all(readable), "not the first bad tag");
                }
                Err(other) => prop_assert!(false, "unexpected {}", other),
            }
        }

        #[test]
        fn a_response_of_any_other_length_is_rejected_for_its_block(
            tags in valid_tags(),
            extra in 1usize..5,
            shorter in any::<bool>(),
        ) {
            for block in plan_reads(&tags, &PlanLimits::default()).unwrap() {
                let count = usize::from(block.count);
                let len = if shorter { count.saturating_sub(extra) } else { count + extra };
                let response = vec![0u16; len];
                for &tag in &block.tags {
                    let is_length_error = matches!(
                        extract(&block, &response, &tags[tag]),
                        Err(ExtractError::ResponseLength { .. })
                    );
                    prop_assert!(is_length_error);
                }
            }
        }
    }
}
