//! GPIO for the box's button and LEDs, behind a small trait with two backends:
//! the GPIO character device (uAPI v2; any board, and gpio-sim in tests) and, with
//! the `rpi` feature, rppal on a Raspberry Pi.
//!
//! Promises: lines are logical (active-low is applied by the backend, so `true`
//! means "pressed" / "lit"); input edges come debounced (by the kernel where the
//! backend offers it); errors name the chip and the line.

pub mod cdev;
#[cfg(feature = "rpi")]
pub mod rpi;

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// One line: its offset on the chip (the BCM number on a Pi) and its polarity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    pub line: u32,
    #[serde(default)]
    pub active_low: bool,
}

/// A logical edge on an input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Became active (a button pressed).
    Active,
    /// Became inactive (released).
    Inactive,
}

#[derive(Debug)]
pub enum GpioError {
    Open { chip: String, message: String },
    Request { chip: String, line: u32, message: String },
    Io { line: u32, message: String },
}

impl fmt::Display for GpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { chip, message } => write!(f, "cannot open GPIO chip {chip}: {message}"),
            Self::Request { chip, line, message } => write!(f, "cannot request line {line} of {chip}: {message}"),
            Self::Io { line, message } => write!(f, "GPIO line {line}: {message}"),
        }
    }
}

impl std::error::Error for GpioError {}

/// An input line with edge events.
pub trait InputLine: Send {
    /// Waits up to `timeout` (forever if `None`) for the next edge.
    fn wait_edge(&mut self, timeout: Option<Duration>) -> Result<Option<Edge>, GpioError>;
    /// The current logical level.
    fn is_active(&mut self) -> Result<bool, GpioError>;
}

/// An output line.
pub trait OutputLine: Send {
    fn set(&mut self, active: bool) -> Result<(), GpioError>;
}

/// A source of lines.
pub trait Gpio: Send {
    fn input(&self, line: LineConfig, debounce: Duration) -> Result<Box<dyn InputLine>, GpioError>;
    fn output(&self, line: LineConfig) -> Result<Box<dyn OutputLine>, GpioError>;
}

/// Which backend `[gpio] backend` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// No button, no LEDs.
    #[default]
    None,
    /// The GPIO character device (`/dev/gpiochipN`).
    Cdev,
    /// rppal (Raspberry Pi; needs the `rpi` build feature).
    Rppal,
}

/// Opens the configured backend; `Ok(None)` for `backend = "none"`.
pub fn open(backend: Backend, chip: &str) -> Result<Option<Box<dyn Gpio>>, GpioError> {
    match backend {
        Backend::None => Ok(None),
        Backend::Cdev => Ok(Some(Box::new(cdev::CdevGpio::open(chip)?))),
        #[cfg(feature = "rpi")]
        Backend::Rppal => Ok(Some(Box::new(rpi::RppalGpio::open()?))),
        #[cfg(not(feature = "rpi"))]
        Backend::Rppal => Err(GpioError::Open {
            chip: "rppal".into(),
            message: "this cap4 was built without the `rpi` feature; use backend = \"cdev\"".into(),
        }),
    }
}
