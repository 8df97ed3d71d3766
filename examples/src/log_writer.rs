//! Where the `mediator` binary's log lines go: standard error, written by
//! a thread of its own from a bounded buffer.
//!
//! A request formats its line and appends it to a shared buffer: one short
//! lock and a copy, no system call, no thread to wake. A writer thread
//! takes the whole buffer every few milliseconds (sooner once it fills past
//! a quarter) and writes it in one call, so a slow terminal, pipe or file
//! never holds a request up. When the buffer is full, new lines are
//! dropped and counted rather than waited for, and a warning says how
//! many were lost.
//!
//! ```
//! let (writer, guard) = mediator_examples::log_writer::stderr();
//! let subscriber = tracing_subscriber::fmt().with_writer(writer).finish();
//! tracing::subscriber::with_default(subscriber, || tracing::info!("hello"));
//! assert_eq!(guard.dropped(), 0);
//! drop(guard); // writes what is buffered, then stops the thread
//! ```

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Most bytes waiting to be written; past it new lines are dropped and
/// counted. About 20,000 request lines.
pub const BUFFER_BYTES: usize = 4 << 20;

/// How long a line may wait in the buffer when little is logged.
const WRITE_EVERY: Duration = Duration::from_millis(20);

struct Shared {
    buffer: Mutex<Vec<u8>>,
    /// Wakes the writer early: a full quarter, or the end.
    wake: Condvar,
    dropped: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn buffer(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while appending leaves bytes, at worst a partial line.
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `bytes` whole or drops them whole: the formatter hands over
    /// one event's line in one call, so lines are never cut.
    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.buffer();
        if buffer.len() + bytes.len() > BUFFER_BYTES {
            drop(buffer);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            buffer.extend_from_slice(bytes);
            let early = buffer.len() > BUFFER_BYTES / 4;
            drop(buffer);
            if early {
                self.wake.notify_one();
            }
        }
    }
}

/// Hands formatted lines to the writer thread; give it to
/// `tracing_subscriber::fmt().with_writer(..)`.
#[derive(Clone)]
pub struct BufferedWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BufferedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedWriter").finish_non_exhaustive()
    }
}

impl Write for BufferedWriter {
    /// Appends `bytes` whole or drops them whole.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.shared.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One line's handle on the buffer, lent by [`BufferedWriter`] for each
/// event: a borrow, so that lines from many threads do not all count
/// references on one shared counter.
#[derive(Debug)]
pub struct LineWriter<'a> {
    writer: &'a BufferedWriter,
}

impl Write for LineWriter<'_> {
    /// Appends `bytes` whole or drops them whole.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.writer.shared.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { writer: self }
    }
}

/// Keeps the writer thread running; dropping it writes what is buffered
/// and stops the thread.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogWriterGuard {
    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for LogWriterGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriterGuard")
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// A writer whose lines a thread writes to standard error, and its guard.
pub fn stderr() -> (BufferedWriter, LogWriterGuard) {
    to(std::io::stderr())
}

/// [`stderr`] with any destination.
pub fn to<W: Write + Send + 'static>(mut destination: W) -> (BufferedWriter, LogWriterGuard) {
    let shared = Arc::new(Shared {
        buffer: Mutex::new(Vec::with_capacity(64 * 1024)),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let writer = BufferedWriter {
        shared: Arc::clone(&shared),
    };
    let inner = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            let mut spare = Vec::with_capacity(64 * 1024);
            let mut reported = 0;
            loop {
                let stopping = inner.stop.load(Ordering::Relaxed);
                {
                    let mut buffer = inner.buffer();
                    if buffer.is_empty() && !stopping {
                        buffer = inner
                            .wake
                            .wait_timeout(buffer, WRITE_EVERY)
                            .map(|(buffer, _)| buffer)
                            .unwrap_or_else(|p| p.into_inner().0);
                    }
                    std::mem::swap(&mut *buffer, &mut spare);
                }
                if !spare.is_empty() {
                    // Standard error gone (a closed pipe): nothing else
                    // can be told; the lines are lost either way.
                    let _ = destination.write_all(&spare);
                    let _ = destination.flush();
                    spare.clear();
                }
                let dropped = inner.dropped.load(Ordering::Relaxed);
                if dropped > reported {
                    let line = format!(
                        "WARN log lines dropped: {} (total {dropped}); standard error was slower than the requests\n",
                        dropped - reported
                    );
                    inner.append(line.as_bytes());
                    reported = dropped;
                }
                if stopping {
                    break;
                }
            }
        })
        .ok();
    (writer, LogWriterGuard { shared, thread })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A destination that keeps what it is given.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl Write for Kept {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_reach_the_destination_whole_once_the_guard_is_dropped() {
        let kept = Kept::default();
        let (writer, guard) = to(kept.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        let dispatch = tracing::Dispatch::new(subscriber);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let dispatch = dispatch.clone();
                scope.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        for i in 0..250 {
                            tracing::info!(t, i, "line");
                        }
                    });
                });
            }
        });
        assert_eq!(guard.dropped(), 0);
        drop(guard);
        let text = String::from_utf8(kept.0.lock().expect("lock").clone()).expect("text");
        assert_eq!(text.lines().count(), 1000);
        assert!(text.lines().all(|line| line.contains("INFO")));
        for t in 0..4 {
            assert_eq!(
                text.lines()
                    .filter(|l| l.contains(&format!("t={t} ")))
                    .count(),
                250
            );
        }
    }

    /// A destination that blocks until told to go on.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>, Kept);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, go) = &*self.0;
            let mut open = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !*open {
                open = go.wait(open).unwrap_or_else(|p| p.into_inner());
            }
            self.1.write(buf)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_destination_drops_and_counts_instead_of_blocking() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let kept = Kept::default();
        let (writer, guard) = to(Stuck(Arc::clone(&gate), kept.clone()));
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        let line = "x".repeat(1000);
        let lines = 3 * BUFFER_BYTES / 1000;
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..lines {
                tracing::info!(i, "{line}");
            }
        });
        // Every line was handed over without waiting for the destination;
        // what neither the blocked write nor the buffer could hold (at most
        // two buffers' worth of the three sent) was counted.
        let dropped = guard.dropped();
        assert!(
            dropped as usize >= lines / 4 && (dropped as usize) < lines,
            "{dropped} of {lines} dropped"
        );
        let (lock, go) = &*gate;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        go.notify_all();
        drop(guard);
        let text = String::from_utf8(kept.0.lock().expect("lock").clone()).expect("text");
        let written = text.lines().filter(|l| l.contains(&line)).count();
        assert_eq!(written as u64 + dropped, lines as u64);
        assert!(text.contains("log lines dropped"), "no warning");
    }
}
