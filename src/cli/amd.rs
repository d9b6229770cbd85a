//! `cap4 amd FILE.wav`: classifies a recording offline with the classifier a
//! live call uses, and prints one JSON line.
//!
//! Promises: exit 0 with the verdict on stdout; 65 (data error) with a message
//! on stderr naming the file and what is wrong with it; 64 for bad usage; 78
//! when `--amd-config` names an `[amd]` section that is invalid.

use std::path::Path;

use crate::amd::{AmdConfig, classify};
use crate::exit;
use crate::section::SectionError;
use crate::wav;

/// sysexits.h EX_DATAERR: the input file is not usable.
pub const DATA_ERROR: i32 = 65;

/// Runs `cap4 amd FILE [--amd-config AMD.toml]`; returns the exit code.
pub fn run(file: &Path, config_path: Option<&Path>) -> i32 {
    let path = file.display();
    let config = match config_path {
        None => AmdConfig::default(),
        Some(p) => match load_config(p) {
            Ok(c) => c,
            Err(message) => {
                eprintln!("cap4 amd: {}: {message}", p.display());
                return exit::CONFIG;
            }
        },
    };
    let samples = match wav::read_8k_mono(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cap4 amd: {path}: {e}");
            return DATA_ERROR;
        }
    };
    match classify(&config, &samples) {
        Ok(verdict) => match serde_json::to_string(&verdict) {
            Ok(line) => match super::emit(&format!("{line}\n")) {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("cap4 amd: writing to standard output: {e}");
                    exit::FAILURE
                }
            },
            Err(e) => {
                eprintln!("cap4 amd: {e}");
                exit::FAILURE
            }
        },
        Err(e) => {
            eprintln!("cap4 amd: {e}");
            exit::CONFIG
        }
    }
}

/// Why `--amd-config` cannot be used.
#[derive(Debug)]
enum AmdFileError {
    Read(std::io::Error),
    Toml(toml::de::Error),
    /// Another section besides `[amd]`.
    NotOnlyAmd,
    Invalid(SectionError),
}

impl std::fmt::Display for AmdFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AmdFileError::Read(e) => write!(f, "{e}"),
            AmdFileError::Toml(e) => write!(f, "[amd] {e}"),
            AmdFileError::NotOnlyAmd => f.write_str("only an [amd] section is read here"),
            AmdFileError::Invalid(e) => write!(f, "{e}"),
        }
    }
}

/// Reads the parameters from a TOML file holding the `[amd]` keys (at top level
/// or under `[amd]`), for tuning before they move into the daemon's config.
fn load_config(path: &Path) -> Result<AmdConfig, AmdFileError> {
    let text = std::fs::read_to_string(path).map_err(AmdFileError::Read)?;
    let mut table: toml::Table = toml::from_str(&text).map_err(AmdFileError::Toml)?;
    let section = match table.remove("amd") {
        Some(amd) if table.is_empty() => amd,
        Some(_) => return Err(AmdFileError::NotOnlyAmd),
        None => toml::Value::Table(table),
    };
    let config: AmdConfig = section.try_into().map_err(AmdFileError::Toml)?;
    config.validate().map_err(AmdFileError::Invalid)?;
    Ok(config)
}
