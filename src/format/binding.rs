//! How a transport names the CloudEvents attributes, the content type and the key: data that each
//! sink declares (its `BINDING` const), built from the protocol conventions below. Nothing here
//! knows a sink.

/// A CloudEvents protocol binding, i.e. how a sink's transport names things. Start from
/// [`Binding::underscored`] or [`Binding::dashed`] and add the transport's particulars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// `specversion`, `id`, `source`, `type`, `subject`, `time` as header names.
    pub(super) attributes: [&'static str; 6],
    /// The header holding the content type; `None`: the sink has a property for it (RabbitMQ)
    /// or no headers at all.
    pub(super) content_type_header: Option<&'static str>,
    /// The prefix of attribute headers: event headers that start with it are not passed on, so
    /// they cannot be taken for attributes.
    pub(super) prefix: &'static str,
    /// HTTP's rule: attribute values are percent-encoded.
    pub(super) percent_encode: bool,
    /// Whether the transport has headers; without, CloudEvents use structured mode.
    pub(super) headers: bool,
    /// The header carrying the key where the transport has no key of its own, in the formats
    /// that do not carry it already (binary CloudEvents have `subject`).
    pub(super) key_header: Option<&'static str>,
    /// Whether the raw format names a content type (RabbitMQ's property), chosen from the
    /// payload; elsewhere raw stays as it always was.
    pub(super) raw_content_type: bool,
}

const UNDERSCORE: [&str; 6] = [
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_subject",
    "ce_time",
];
const DASH: [&str; 6] = [
    "ce-specversion",
    "ce-id",
    "ce-source",
    "ce-type",
    "ce-subject",
    "ce-time",
];

/// The content-type header of the Kafka and NATS bindings.
const CONTENT_TYPE: &str = "content-type";

impl Binding {
    const fn with(attributes: [&'static str; 6], prefix: &'static str) -> Binding {
        Binding {
            attributes,
            content_type_header: Some(CONTENT_TYPE),
            prefix,
            percent_encode: false,
            headers: true,
            key_header: None,
            raw_content_type: false,
        }
    }

    /// `ce_*` attribute headers and a `content-type` header, as the Kafka protocol binding
    /// spells them (also used where a transport has no binding of its own, e.g. Redis).
    pub const fn underscored() -> Binding {
        Binding::with(UNDERSCORE, "ce_")
    }

    /// `ce-*` attribute headers and a `content-type` header, as the NATS, HTTP and RabbitMQ
    /// (knative-extensions/eventing-rabbitmq) bindings spell them.
    pub const fn dashed() -> Binding {
        Binding::with(DASH, "ce-")
    }

    /// The content type in this header instead (HTTP: `Content-Type`).
    pub const fn content_type_header(self, name: &'static str) -> Binding {
        Binding {
            content_type_header: Some(name),
            ..self
        }
    }

    /// The content type as a property of the message, not a header (RabbitMQ's `content_type`):
    /// [`super::Message::content_type`] carries it.
    pub const fn content_type_property(self) -> Binding {
        Binding {
            content_type_header: None,
            ..self
        }
    }

    /// Attribute values percent-encoded (HTTP's rule).
    pub const fn percent_encoded(self) -> Binding {
        Binding {
            percent_encode: true,
            ..self
        }
    }

    /// The key in this header, for a transport without a key of its own, in the formats that do
    /// not carry it already.
    pub const fn key_header(self, name: &'static str) -> Binding {
        Binding {
            key_header: Some(name),
            ..self
        }
    }

    /// The raw format names a content type too (from the header `content-type`, else from the
    /// payload), for a transport with a content-type property or header it must fill.
    pub const fn raw_names_content_type(self) -> Binding {
        Binding {
            raw_content_type: true,
            ..self
        }
    }

    /// A transport without headers (stdout): CloudEvents always go structured.
    pub const fn without_headers(self) -> Binding {
        Binding {
            headers: false,
            content_type_header: None,
            ..self
        }
    }
}

/// What the property tests of every format and binding (`sink::properties`) read.
#[cfg(test)]
impl Binding {
    pub(crate) fn attribute_names(&self) -> [&'static str; 6] {
        self.attributes
    }

    pub(crate) fn attribute_prefix(&self) -> &'static str {
        self.prefix
    }

    pub(crate) fn content_type_header_name(&self) -> Option<&'static str> {
        self.content_type_header
    }

    pub(crate) fn key_header_name(&self) -> Option<&'static str> {
        self.key_header
    }

    pub(crate) fn has_headers(&self) -> bool {
        self.headers
    }

    pub(crate) fn is_percent_encoded(&self) -> bool {
        self.percent_encode
    }

    pub(crate) fn names_raw_content_type(&self) -> bool {
        self.raw_content_type
    }
}
