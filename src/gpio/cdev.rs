//! The GPIO character device backend (Linux uAPI v2, through `gpiocdev`): works on
//! any board with a GPIO chip, and with gpio-sim in tests. Debounce and polarity
//! are the kernel's.

use std::time::Duration;

use gpiocdev::Request;
use gpiocdev::line::{Bias, EdgeDetection, EdgeKind, Value};

use super::{Edge, Gpio, GpioError, InputLine, LineConfig, OutputLine};

pub struct CdevGpio {
    chip: String,
}

impl CdevGpio {
    /// `chip` is a path (`/dev/gpiochip0`) or a name (`gpiochip0`).
    pub fn open(chip: &str) -> Result<Self, GpioError> {
        let path = if chip.starts_with('/') { chip.to_string() } else { format!("/dev/{chip}") };
        gpiocdev::chip::Chip::from_path(&path).map_err(|e| GpioError::Open { chip: path.clone(), message: e.to_string() })?;
        Ok(Self { chip: path })
    }

    fn request_error(&self, line: u32) -> impl Fn(gpiocdev::Error) -> GpioError + '_ {
        move |e| GpioError::Request { chip: self.chip.clone(), line, message: e.to_string() }
    }
}

impl Gpio for CdevGpio {
    fn input(&self, line: LineConfig, debounce: Duration) -> Result<Box<dyn InputLine>, GpioError> {
        let mut builder = Request::builder();
        builder
            .on_chip(&self.chip)
            .with_consumer("cap4-button")
            .with_line(line.line)
            .as_input()
            .with_edge_detection(EdgeDetection::BothEdges)
            .with_debounce_period(debounce);
        if line.active_low {
            // A button to ground with the pull-up on.
            builder.as_active_low().with_bias(Bias::PullUp);
        }
        let req = builder.request().map_err(self.request_error(line.line))?;
        Ok(Box::new(CdevInput { req, line: line.line }))
    }

    fn output(&self, line: LineConfig) -> Result<Box<dyn OutputLine>, GpioError> {
        let mut builder = Request::builder();
        builder.on_chip(&self.chip).with_consumer("cap4-led").with_line(line.line);
        if line.active_low {
            builder.as_active_low();
        }
        builder.as_output(Value::Inactive);
        let req = builder.request().map_err(self.request_error(line.line))?;
        Ok(Box::new(CdevOutput { req, line: line.line }))
    }
}

struct CdevInput {
    req: Request,
    line: u32,
}

impl InputLine for CdevInput {
    fn wait_edge(&mut self, timeout: Option<Duration>) -> Result<Option<Edge>, GpioError> {
        let io = |e: gpiocdev::Error| GpioError::Io { line: self.line, message: e.to_string() };
        if let Some(timeout) = timeout {
            if !self.req.wait_edge_event(timeout).map_err(io)? {
                return Ok(None);
            }
        }
        let event = self.req.read_edge_event().map_err(io)?;
        // Events are logical: with active-low, a press is a rising edge here.
        Ok(Some(match event.kind {
            EdgeKind::Rising => Edge::Active,
            EdgeKind::Falling => Edge::Inactive,
        }))
    }

    fn is_active(&mut self) -> Result<bool, GpioError> {
        let value = self.req.value(self.line).map_err(|e| GpioError::Io { line: self.line, message: e.to_string() })?;
        Ok(value == Value::Active)
    }
}

struct CdevOutput {
    req: Request,
    line: u32,
}

impl OutputLine for CdevOutput {
    fn set(&mut self, active: bool) -> Result<(), GpioError> {
        let value = if active { Value::Active } else { Value::Inactive };
        self.req.set_value(self.line, value).map(|_| ()).map_err(|e| GpioError::Io { line: self.line, message: e.to_string() })
    }
}
