//! Kafka's framing: a 4-byte big-endian size, then that many bytes. Shared by server and client.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Frames above this size are refused as malformed (Kafka's `socket.request.max.bytes` is
/// 100 MiB); it keeps a garbage length from allocating gigabytes.
pub const MAX_FRAME: usize = 100 << 20;

/// Reads one frame. `Ok(None)` at a clean end of stream (between frames).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Bytes>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame size {len} is outside 0..={MAX_FRAME}"),
        ));
    }
    // Read into spare capacity: zeroing a buffer of megabytes first would cost as much as a copy.
    let len = len as usize;
    let mut buf = BytesMut::with_capacity(len);
    let mut body = r.take(len as u64);
    while buf.len() < len {
        if body.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(Some(buf.freeze()))
}
