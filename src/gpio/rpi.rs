//! The Raspberry Pi backend (rppal, `rpi` feature). Kept thin on purpose: rppal is
//! retired upstream, and the character-device backend works on a Pi too. Line
//! numbers are BCM numbers; debounce is rppal's (software).

use std::time::Duration;

use rppal::gpio::{Level, Trigger};

use super::{Edge, Gpio, GpioError, InputLine, LineConfig, OutputLine};

pub struct RppalGpio {
    gpio: rppal::gpio::Gpio,
}

impl RppalGpio {
    pub fn open() -> Result<Self, GpioError> {
        let gpio = rppal::gpio::Gpio::new().map_err(|e| GpioError::Open { chip: "rppal".into(), message: e.to_string() })?;
        Ok(Self { gpio })
    }
}

fn err(line: u32) -> impl Fn(rppal::gpio::Error) -> GpioError {
    move |e| GpioError::Request { chip: "rppal".into(), line, message: e.to_string() }
}

impl Gpio for RppalGpio {
    fn input(&self, line: LineConfig, debounce: Duration) -> Result<Box<dyn InputLine>, GpioError> {
        let pin = self.gpio.get(line.line as u8).map_err(err(line.line))?;
        let mut pin = if line.active_low { pin.into_input_pullup() } else { pin.into_input() };
        pin.set_interrupt(Trigger::Both, Some(debounce)).map_err(err(line.line))?;
        Ok(Box::new(RppalInput { pin, config: line }))
    }

    fn output(&self, line: LineConfig) -> Result<Box<dyn OutputLine>, GpioError> {
        let pin = self.gpio.get(line.line as u8).map_err(err(line.line))?;
        let mut out = RppalOutput { pin: pin.into_output(), config: line };
        out.set(false)?;
        Ok(Box::new(out))
    }
}

struct RppalInput {
    pin: rppal::gpio::InputPin,
    config: LineConfig,
}

impl InputLine for RppalInput {
    fn wait_edge(&mut self, timeout: Option<Duration>) -> Result<Option<Edge>, GpioError> {
        let event = self.pin.poll_interrupt(false, timeout).map_err(err(self.config.line))?;
        Ok(event.map(|e| {
            let high = e.trigger == Trigger::RisingEdge;
            if high != self.config.active_low { Edge::Active } else { Edge::Inactive }
        }))
    }

    fn is_active(&mut self) -> Result<bool, GpioError> {
        Ok((self.pin.read() == Level::High) != self.config.active_low)
    }
}

struct RppalOutput {
    pin: rppal::gpio::OutputPin,
    config: LineConfig,
}

impl OutputLine for RppalOutput {
    fn set(&mut self, active: bool) -> Result<(), GpioError> {
        if active != self.config.active_low {
            self.pin.set_high()
        } else {
            self.pin.set_low()
        }
        Ok(())
    }
}
