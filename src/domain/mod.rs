//! Domain: orders as the gateway accepts them, publishes them and streams them. No I/O here.

pub mod order;
pub mod position;

pub use order::{FieldError, NewOrder, Order, Rejected, TrackedOrder};
pub use position::{Position, PositionError};
