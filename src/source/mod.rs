//! Acquisition: where a reading enters. Station protocols (Modbus TCP/RTU, OPC UA) and the
//! built-in generator all yield [`Reading`]s for the rules stage.

pub mod tag;

pub use tag::{ByteOrder, DataType, RegisterArea, TagRole};
