//! Binary files of fixed-size records (CIFAR-10 batches, STL-10 images): size checks that
//! name the file, and reads of one record on demand.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::data_err;
use crate::error::Result;

/// Number of `record`-byte records in a file of `size` bytes, or an error naming the file,
/// its size and the record size.
pub(crate) fn record_count(path: &Path, size: u64, record: usize, what: &str) -> Result<usize> {
    if size == 0 || !size.is_multiple_of(record as u64) {
        return Err(data_err(
            path,
            format!(
                "file is {size} bytes, not a positive multiple of the {record}-byte {what} \
                 ({} whole records and {} bytes over)",
                size / record as u64,
                size % record as u64
            ),
        ));
    }
    Ok((size / record as u64) as usize)
}

pub(crate) fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(|e| data_err(path, format!("cannot read: {e}")))?
        .len())
}

pub(crate) fn read_all(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| data_err(path, format!("cannot read: {e}")))
}

/// A file of fixed-size records, read one record at a time (the file may be larger than memory).
pub(crate) struct RecordFile {
    pub path: PathBuf,
    pub record: usize,
    pub count: usize,
    file: Mutex<File>,
}

impl RecordFile {
    pub fn open(path: &Path, record: usize, what: &str) -> Result<RecordFile> {
        let count = record_count(path, file_size(path)?, record, what)?;
        let file = File::open(path).map_err(|e| data_err(path, format!("cannot open: {e}")))?;
        Ok(RecordFile {
            path: path.to_path_buf(),
            record,
            count,
            file: Mutex::new(file),
        })
    }

    /// Record `i` into `buf` (`record` bytes).
    pub fn read(&self, i: usize, buf: &mut [u8]) -> Result<()> {
        assert!(i < self.count && buf.len() == self.record);
        let mut file = self.file.lock().unwrap();
        file.seek(SeekFrom::Start((i * self.record) as u64))
            .and_then(|_| file.read_exact(buf))
            .map_err(|e| data_err(&self.path, format!("cannot read record {i}: {e}")))
    }
}
