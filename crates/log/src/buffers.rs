//! Recycled read buffers for segment chunks.
//!
//! A reader reads a chunk of a segment into a buffer that the records decoded from it borrow: their keys
//! and values are slices of it, not copies. Safe Rust reads only into initialised memory, so a fresh
//! buffer is zeroed before the read overwrites it; in a profile of the wire server's 1 KiB queue consume,
//! zeroing fresh 1 MiB buffers (and faulting their pages in) took about a tenth of the machine's busy
//! time. Here a buffer goes back to a small pool once the last record borrowing it is dropped, and the
//! next read reuses it as it is: already initialised, only overwritten.

use std::sync::Mutex;

use bytes::Bytes;

/// Pooled buffers are at least this large; a read of less than half of it (the tail of the log) gets a
/// buffer of its own, cheap to zero.
const POOLED_MIN: usize = 64 * 1024;
/// Nor larger than this: a rare huge batch does not keep its memory.
const POOLED_MAX: usize = 4 << 20;
/// How many idle buffers a pool keeps (at most 8 x 4 MiB).
const POOL_LEN: usize = 8;

/// Idle buffers, each fully initialised (`len() == capacity` is not required, only `len()` counts).
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<Vec<u8>>>,
}

/// The process's pool.
pub(crate) static POOL: Pool = Pool {
    idle: Mutex::new(Vec::new()),
};

impl Pool {
    /// A buffer of `len` initialised bytes to read into: an idle one at least as large if there is one,
    /// else a new one (rounded up to a power of two, so that it fits more of the reads to come).
    pub(crate) fn take(&'static self, len: usize) -> Buffer {
        if !(POOLED_MIN / 2..=POOLED_MAX).contains(&len) {
            return Buffer {
                buf: vec![0; len],
                len,
                pool: None,
            };
        }
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.iter()
                .position(|b| b.len() >= len)
                .map(|i| idle.swap_remove(i))
        };
        let buf = reused.unwrap_or_else(|| vec![0; len.next_power_of_two().clamp(POOLED_MIN, POOLED_MAX)]);
        Buffer {
            buf,
            len,
            pool: Some(self),
        }
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_LEN {
            idle.push(buf);
        }
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// `len` bytes to read into; frozen into [`Bytes`] that give the memory back to their pool when the
/// last of them is dropped.
#[derive(Debug)]
pub(crate) struct Buffer {
    buf: Vec<u8>,
    len: usize,
    pool: Option<&'static Pool>,
}

impl Buffer {
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool {
            pool.give_back(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_when_its_last_slice_is_dropped_and_is_reused_as_it_is() {
        static TEST_POOL: Pool = Pool {
            idle: Mutex::new(Vec::new()),
        };
        let mut b = TEST_POOL.take(100_000);
        assert_eq!(b.as_mut_slice().len(), 100_000);
        b.as_mut_slice().fill(7);
        let bytes = b.freeze();
        assert_eq!(bytes.len(), 100_000);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(TEST_POOL.idle(), 0, "a slice still borrows it");
        assert_eq!(&slice[..], &[7; 10]);
        drop(slice);
        assert_eq!(TEST_POOL.idle(), 1);

        // A smaller read reuses it: its bytes are the old ones (a read overwrites them), not zeroed.
        let mut again = TEST_POOL.take(70_000);
        assert_eq!(TEST_POOL.idle(), 0);
        assert_eq!(again.as_mut_slice().len(), 70_000);
        assert!(again.as_mut_slice().iter().all(|&x| x == 7));
        // A larger one than any idle buffer gets a new, zeroed one.
        let mut larger = TEST_POOL.take(200_000);
        assert!(larger.as_mut_slice().iter().all(|&x| x == 0));
        drop((again, larger));
        assert_eq!(TEST_POOL.idle(), 2);

        // Small and huge buffers are not pooled.
        drop(TEST_POOL.take(1000).freeze());
        drop(TEST_POOL.take(POOLED_MAX + 1).freeze());
        assert_eq!(TEST_POOL.idle(), 2);
        // The pool keeps at most POOL_LEN idle buffers.
        let many: Vec<Buffer> = (0..POOL_LEN + 3).map(|_| TEST_POOL.take(POOLED_MIN)).collect();
        drop(many);
        assert_eq!(TEST_POOL.idle(), POOL_LEN);
    }
}
