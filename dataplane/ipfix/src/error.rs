//! Why an exporter or a text could not be built. Plain data, nothing allocated.

/// An [`crate::ExporterConfig`] that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The largest record, or the templates, would not fit in a message.
    #[error(
        "IPFIX message size {requested} is too small: at least {min} bytes are needed for the \
         largest record or the templates"
    )]
    MessageSizeTooSmall { requested: u16, min: u16 },
    #[error("IPFIX template refresh every 0 messages: it must be at least 1")]
    TemplateRefreshMessagesZero,
    #[error(
        "IPFIX template refresh every {requested} seconds is out of range: it must be 1 to {max}"
    )]
    TemplateRefreshSecondsOutOfRange { requested: u32, max: u32 },
}

/// A text longer than [`crate::SHORT_TEXT_LEN_MAX`] bytes, refused by [`crate::ShortText::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "text of {len} bytes is longer than the {max} bytes a flow record carries",
    max = crate::SHORT_TEXT_LEN_MAX
)]
pub struct TextTooLong {
    pub len: usize,
}
