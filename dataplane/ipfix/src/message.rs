//! The frame of an IPFIX message (RFC 7011, 3.1 and 3.3.2): a 16-byte header, then sets, each
//! with a 4-byte header. Lengths are known only once a set or the message is complete, so they
//! are written as zero first and filled in at the end.

/// The version field of every IPFIX message.
const VERSION: u16 = 10;
pub(crate) const MESSAGE_HEADER_LEN: usize = 16;
pub(crate) const SET_HEADER_LEN: usize = 4;

/// Offsets in the message header.
mod field {
    pub const VERSION: usize = 0;
    pub const LENGTH: usize = 2;
    pub const EXPORT_TIME: usize = 4;
    pub const SEQUENCE_NUMBER: usize = 8;
    pub const OBSERVATION_DOMAIN_ID: usize = 12;
}

/// Offset of the length in a set header.
const SET_LENGTH: usize = 2;

/// Appends a message header whose length, export time and sequence number
/// [`complete_header`] fills in.
pub(crate) fn write_header(out: &mut Vec<u8>, observation_domain_id: u32) {
    let start = out.len();
    out.resize(start + MESSAGE_HEADER_LEN, 0);
    put(out, start + field::VERSION, &VERSION.to_be_bytes());
    put(
        out,
        start + field::OBSERVATION_DOMAIN_ID,
        &observation_domain_id.to_be_bytes(),
    );
}

/// Fills in the header of `message`, which is complete: its length, the time it leaves (seconds
/// since the Unix epoch) and the count of data records sent before it.
pub(crate) fn complete_header(message: &mut [u8], export_time_s: u32, sequence_number: u32) {
    debug_assert!(message.len() <= usize::from(u16::MAX));
    let length = message.len() as u16;
    put(message, field::LENGTH, &length.to_be_bytes());
    put(message, field::EXPORT_TIME, &export_time_s.to_be_bytes());
    put(
        message,
        field::SEQUENCE_NUMBER,
        &sequence_number.to_be_bytes(),
    );
}

/// Appends the header of a set and returns where it starts, for [`complete_set`].
pub(crate) fn begin_set(out: &mut Vec<u8>, set_id: u16) -> usize {
    let start = out.len();
    out.extend_from_slice(&set_id.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    start
}

/// Fills in the length of the set that starts at `start` and ends with `message`.
pub(crate) fn complete_set(message: &mut [u8], start: usize) {
    debug_assert!(message.len() - start <= usize::from(u16::MAX));
    let length = (message.len() - start) as u16;
    put(message, start + SET_LENGTH, &length.to_be_bytes());
}

/// Overwrites bytes the message already has: its headers, written before.
fn put(message: &mut [u8], offset: usize, bytes: &[u8]) {
    let target = message.get_mut(offset..offset + bytes.len());
    debug_assert!(target.is_some(), "header field past the end of the message");
    if let Some(target) = target {
        target.copy_from_slice(bytes);
    }
}
