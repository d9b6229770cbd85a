//! A 16-bit PCM WAV file that stays valid while it grows: the header's
//! sizes are rewritten and the file synced at every [`GrowingWav::sync`],
//! so a crash or a power cut leaves a file that plays up to the last sync.
//!
//! Promise: after `sync` returns, the file on disk is a complete WAV of
//! every sample appended before it. Created `0600`: a call's audio is
//! nobody else's business.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The canonical 44-byte header: RIFF, `fmt ` (PCM), `data`.
const HEADER_BYTES: u32 = 44;

pub struct GrowingWav {
    file: io::BufWriter<File>,
    channels: u16,
    rate: u32,
    /// Bytes of samples written (the `data` chunk's size).
    data_bytes: u32,
}

impl GrowingWav {
    /// Creates `path` (it must not exist) with an empty `data` chunk.
    pub fn create(path: &Path, channels: u16, rate: u32) -> io::Result<GrowingWav> {
        let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        let mut wav = GrowingWav { file: io::BufWriter::with_capacity(64 * 1024, file), channels, rate, data_bytes: 0 };
        let header = wav.header();
        wav.file.write_all(&header)?;
        wav.sync()?;
        Ok(wav)
    }

    /// Appends interleaved samples (a whole number of frames).
    pub fn append(&mut self, interleaved: &[i16]) -> io::Result<()> {
        let bytes = u32::try_from(interleaved.len() * 2).unwrap_or(u32::MAX);
        // A WAV cannot hold 4 GiB; a call never comes near (8 kHz stereo: 37 h).
        if self.data_bytes.checked_add(bytes).is_none_or(|total| total > u32::MAX - HEADER_BYTES) {
            return Err(io::Error::other("the recording reached the WAV size limit"));
        }
        let mut buf = Vec::with_capacity(interleaved.len() * 2);
        for sample in interleaved {
            buf.extend_from_slice(&sample.to_le_bytes());
        }
        self.file.write_all(&buf)?;
        self.data_bytes += bytes;
        Ok(())
    }

    /// Writes what is buffered, the header's sizes, and syncs the data.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let header = self.header();
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header)?;
        file.seek(SeekFrom::End(0))?;
        file.sync_data()
    }

    /// Milliseconds of audio appended.
    pub fn duration_ms(&self) -> u64 {
        let frame_bytes = u64::from(self.channels) * 2;
        u64::from(self.data_bytes) / frame_bytes * 1000 / u64::from(self.rate.max(1))
    }

    fn header(&self) -> [u8; HEADER_BYTES as usize] {
        let block_align = self.channels * 2;
        let mut h = [0u8; HEADER_BYTES as usize];
        h[0..4].copy_from_slice(b"RIFF");
        h[4..8].copy_from_slice(&(HEADER_BYTES - 8 + self.data_bytes).to_le_bytes());
        h[8..12].copy_from_slice(b"WAVE");
        h[12..16].copy_from_slice(b"fmt ");
        h[16..20].copy_from_slice(&16u32.to_le_bytes());
        h[20..22].copy_from_slice(&1u16.to_le_bytes());
        h[22..24].copy_from_slice(&self.channels.to_le_bytes());
        h[24..28].copy_from_slice(&self.rate.to_le_bytes());
        h[28..32].copy_from_slice(&(self.rate * u32::from(block_align)).to_le_bytes());
        h[32..34].copy_from_slice(&block_align.to_le_bytes());
        h[34..36].copy_from_slice(&16u16.to_le_bytes());
        h[36..40].copy_from_slice(b"data");
        h[40..44].copy_from_slice(&self.data_bytes.to_le_bytes());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_header(bytes: &[u8]) -> (u32, u16, u32, u32) {
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        (u32_at(4), u16::from_le_bytes([bytes[22], bytes[23]]), u32_at(24), u32_at(40))
    }

    #[test]
    fn the_file_on_disk_is_a_whole_wav_after_every_sync() {
        let dir = std::env::temp_dir().join(format!("cap4-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grow.wav");
        let _ = std::fs::remove_file(&path);
        let mut wav = GrowingWav::create(&path, 2, 8000).unwrap();
        let empty = std::fs::read(&path).unwrap();
        assert_eq!(empty.len(), 44);
        assert_eq!(read_header(&empty), (36, 2, 8000, 0));
        wav.append(&[1, -1, 2, -2]).unwrap();
        wav.sync().unwrap();
        wav.append(&vec![7; 16_000]).unwrap(); // 1 s, not synced: as if the power went now
        let on_disk = std::fs::read(&path).unwrap();
        let (riff, _, _, data) = read_header(&on_disk);
        assert_eq!((riff, data), (36 + 8, 8), "the header names what was synced");
        assert!(on_disk.len() >= 44 + 8);
        assert_eq!(&on_disk[44..52], &[1, 0, 255, 255, 2, 0, 254, 255]);
        wav.sync().unwrap();
        let synced = std::fs::read(&path).unwrap();
        assert_eq!(read_header(&synced).3, 8 + 32_000);
        assert_eq!(synced.len(), 44 + 32_008);
        assert_eq!(wav.duration_ms(), 1_000);
        // It reads back as WAV through the project's own reader.
        let mono = crate::wav::read_8k_mono(&path).unwrap();
        assert_eq!(mono.len(), 8_002);
        assert!(GrowingWav::create(&path, 2, 8000).is_err(), "never overwrites");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
