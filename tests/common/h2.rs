//! Raw HTTP/2 frames, for tests that play a client hyper's own would not
//! (one that stops mid-preface, never answers a `PING`, ...).

/// An HTTP/2 frame: its 9-byte header (length, type, flags, stream id),
/// then `payload` (RFC 9113, section 4.1).
pub(crate) fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}
