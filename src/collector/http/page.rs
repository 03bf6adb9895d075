//! The web page.

pub(super) async fn index() -> &'static str {
    "linesentry collector\n"
}
pub(super) async fn script() -> &'static str {
    ""
}
pub(super) async fn style() -> &'static str {
    ""
}
