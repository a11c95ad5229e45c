//! Reading file content (see [`reader`]).

pub mod reader;
