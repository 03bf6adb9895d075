//! The tables of `docs/SIEM.md` made from the code, so a test can tell when the document
//! drifts from what the encoders do.

use std::fmt::Write as _;

use linesentry_event::EventType;

use crate::classes::{class_of, UNKNOWN_CLASS_ID};
use crate::ocsf;

/// The Markdown table of `docs/SIEM.md` (between its `classes` markers), from this code.
pub fn dictionary_markdown() -> String {
    let mut out = String::from(
        "| class id | event_type | title | family | OCSF class | made by | ATT&CK for ICS |\n\
         |---:|---|---|---|---|---|---|\n",
    );
    for t in EventType::ALL {
        let c = class_of(*t);
        let attack = t.entry().map(|e| e.attack.join(", ")).unwrap_or_default();
        let ocsf = ocsf::class_for(c.family);
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} ({}) | {} | {} |",
            c.id,
            t.as_str(),
            c.title,
            c.family.as_str(),
            ocsf.name,
            ocsf.uid,
            c.origin.as_str(),
            if attack.is_empty() { "-" } else { &attack },
        );
    }
    let _ = writeln!(
        out,
        "| {UNKNOWN_CLASS_ID} | any other | the type name | detection | Detection Finding (2004) | - | from `event_data.attack` |"
    );
    out
}
