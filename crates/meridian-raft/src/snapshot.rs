//! The snapshot file format.
//!
//! ```text
//! "MRDNSNAP" | format u32 | meta length u32 | meta (postcard)
//! { 0x01 | keyspace u8 | key length u32 | key | value length u32 | value }*
//! 0x00 | SHA-256 of every byte before it
//! ```
//!
//! All integers are big-endian. The checksum is verified before a snapshot is
//! installed, so a truncated or damaged transfer is refused instead of loaded.

use crate::types::SnapshotMeta;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"MRDNSNAP";
/// Current snapshot format.
pub const SNAPSHOT_FORMAT: u32 = 1;
const RECORD: u8 = 1;
const END: u8 = 0;

/// A snapshot stored as a file; what openraft hands between the state machine and
/// the network.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    /// Where the snapshot lives.
    pub path: PathBuf,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Writes a snapshot file record by record, then seals it with its checksum.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    hasher: Sha256,
    path: PathBuf,
}

impl SnapshotWriter {
    /// Creates `path` and writes the header with `meta`.
    pub fn create(path: &Path, meta: &SnapshotMeta) -> io::Result<Self> {
        let mut writer = Self {
            out: BufWriter::with_capacity(1 << 20, File::create(path)?),
            hasher: Sha256::new(),
            path: path.to_path_buf(),
        };
        let meta = postcard::to_stdvec(meta).map_err(io::Error::other)?;
        writer.write(MAGIC)?;
        writer.write(&SNAPSHOT_FORMAT.to_be_bytes())?;
        writer.write_len(meta.len())?;
        writer.write(&meta)?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }

    fn write_len(&mut self, len: usize) -> io::Result<()> {
        let len = u32::try_from(len).map_err(|_| invalid("snapshot record longer than 4 GiB"))?;
        self.write(&len.to_be_bytes())
    }

    /// Appends one key-value of keyspace number `keyspace`.
    pub fn record(&mut self, keyspace: u8, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.write(&[RECORD, keyspace])?;
        self.write_len(key.len())?;
        self.write(key)?;
        self.write_len(value.len())?;
        self.write(value)
    }

    /// Seals the file with its checksum and fsyncs it.
    pub fn finish(mut self) -> io::Result<PathBuf> {
        self.write(&[END])?;
        let checksum = self.hasher.finalize_reset();
        self.out.write_all(&checksum)?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(self.path)
    }
}

/// Checks a snapshot file's checksum and returns its metadata.
pub fn verify(path: &Path) -> io::Result<SnapshotMeta> {
    let len = std::fs::metadata(path)?.len();
    if len < 32 {
        return Err(invalid("snapshot file is truncated"));
    }
    let mut input = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut hasher = Sha256::new();
    let mut remaining = len - 32;
    let mut buffer = vec![0u8; 1 << 16];
    while remaining > 0 {
        let want = remaining.min(buffer.len() as u64) as usize;
        input.read_exact(&mut buffer[..want])?;
        hasher.update(&buffer[..want]);
        remaining -= want as u64;
    }
    let mut stored = [0u8; 32];
    input.read_exact(&mut stored)?;
    if hasher.finalize().as_slice() != stored {
        return Err(invalid(format!(
            "snapshot {} fails its checksum",
            path.display()
        )));
    }
    Ok(SnapshotReader::open(path)?.meta)
}

/// One stored key-value: `(keyspace number, key, value)`.
pub type SnapshotRecord = (u8, Vec<u8>, Vec<u8>);

/// Reads a snapshot file's records in order.
pub struct SnapshotReader {
    input: BufReader<File>,
    /// The snapshot's metadata.
    pub meta: SnapshotMeta,
}

impl SnapshotReader {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut input = BufReader::with_capacity(1 << 20, File::open(path)?);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(invalid("not a Meridian snapshot file"));
        }
        let format = read_u32(&mut input)?;
        if format != SNAPSHOT_FORMAT {
            return Err(invalid(format!(
                "snapshot format {format} is not supported (this build reads {SNAPSHOT_FORMAT})"
            )));
        }
        let meta = read_block(&mut input)?;
        let meta = postcard::from_bytes(&meta).map_err(|e| invalid(e.to_string()))?;
        Ok(Self { input, meta })
    }

    /// The next record as `(keyspace, key, value)`, or `None` at the end.
    pub fn next_record(&mut self) -> io::Result<Option<SnapshotRecord>> {
        let mut tag = [0u8; 2];
        self.input.read_exact(&mut tag[..1])?;
        match tag[0] {
            END => Ok(None),
            RECORD => {
                self.input.read_exact(&mut tag[1..])?;
                let key = read_block(&mut self.input)?;
                let value = read_block(&mut self.input)?;
                Ok(Some((tag[1], key, value)))
            }
            other => Err(invalid(format!("unknown snapshot record tag {other}"))),
        }
    }
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut raw = [0u8; 4];
    input.read_exact(&mut raw)?;
    Ok(u32::from_be_bytes(raw))
}

fn read_block(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let len = read_u32(input)? as usize;
    let mut block = vec![0u8; len];
    input.read_exact(&mut block)?;
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let meta = SnapshotMeta::default();
        let mut writer = SnapshotWriter::create(&path, &meta).unwrap();
        writer.record(0, b"k1", b"v1").unwrap();
        writer.record(1, b"k2", b"").unwrap();
        writer.finish().unwrap();
        assert_eq!(verify(&path).unwrap(), meta);
        let mut reader = SnapshotReader::open(&path).unwrap();
        assert_eq!(
            reader.next_record().unwrap(),
            Some((0, b"k1".to_vec(), b"v1".to_vec()))
        );
        assert_eq!(
            reader.next_record().unwrap(),
            Some((1, b"k2".to_vec(), vec![]))
        );
        assert_eq!(reader.next_record().unwrap(), None);

        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(verify(&path).is_err());
    }
}
