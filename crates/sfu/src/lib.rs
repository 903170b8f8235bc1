//! Sans-IO forwarding decisions for webconf's SFU.
//!
//! [`Forwarder`] decides, for every room of the SFU, who receives which
//! track and which simulcast layer of it, when a publisher must be asked for
//! a keyframe, which layers nobody receives (so the publisher can pause
//! them: *dynacast*), and who is speaking. It knows nothing of str0m,
//! sockets, SDP or clocks: the IO shell tells it what happened (a
//! participant joined, published a track, a frame arrived, a subscriber
//! asked for a keyframe, a bandwidth estimate changed, time passed as
//! `now_ms`) and carries out its [`Output`]s. Everything here is tested
//! without a network.
//!
//! Media frames take the fast path: [`Forwarder::forward`] answers with the
//! subscribers of one frame without allocating.

mod forwarder;
mod speaker;

pub use forwarder::{Config, Forwarder, Layer, MAX_LAYERS, Output, ParticipantId, Source, TrackKey};
pub use speaker::SpeakerDetector;
