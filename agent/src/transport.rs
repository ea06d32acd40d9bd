//! Where the stream goes: the first vsock connection to the host (the [`crate::link`]
//! makes the later ones), or a file.

use std::{
    fs::File,
    io::{self, BufWriter},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use vsock::VsockStream;

/// How long to keep trying to reach the host.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between connection attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The stream's destination could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection to the host within the timeout.
    #[error(
        "connecting to vsock CID {cid} port {port} ({attempts} attempts in {waited:?}): {source}"
    )]
    VsockConnect {
        /// Host CID.
        cid: u32,
        /// Port.
        port: u32,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        waited: Duration,
        /// The last attempt's error.
        #[source]
        source: io::Error,
    },
    /// The output file could not be created.
    #[error("creating output file {path}: {source}")]
    CreateFile {
        /// The file.
        path: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// Creates the file the stream is written to (instead of the host).
pub fn create_file(path: &Path) -> Result<BufWriter<File>, TransportError> {
    let file = File::create(path).map_err(|source| TransportError::CreateFile {
        path: path.display().to_string(),
        source,
    })?;
    tracing::info!("writing the stream to {}", path.display());
    Ok(BufWriter::with_capacity(256 * 1024, file))
}

/// Connects to `cid:port`, retrying until `timeout` has passed (the host may still be
/// setting up, or the vsock modules may still be loading).
pub fn connect_vsock(
    cid: u32,
    port: u32,
    timeout: Duration,
) -> Result<VsockStream, TransportError> {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match VsockStream::connect_with_cid_port(cid, port) {
            Ok(s) => return Ok(s),
            Err(source) => {
                if started.elapsed() >= timeout {
                    return Err(TransportError::VsockConnect {
                        cid,
                        port,
                        attempts,
                        waited: started.elapsed(),
                        source,
                    });
                }
                if attempts == 1 {
                    tracing::info!(
                        "vsock CID {cid} port {port} not reachable yet ({source}); retrying"
                    );
                }
                thread::sleep(RETRY_PAUSE);
            }
        }
    }
}
