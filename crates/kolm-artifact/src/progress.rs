//! Progress reporting for long reads and writes, without tying the library to
//! a terminal: tools pass an implementation that draws a bar.

/// Receives progress of a long operation. All methods have no-op defaults.
pub trait Progress {
    /// A new phase begins, covering `total` bytes.
    fn start(&self, _label: &str, _total: u64) {}
    /// `bytes` more bytes were processed.
    fn advance(&self, _bytes: u64) {}
    /// The phase is done.
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
