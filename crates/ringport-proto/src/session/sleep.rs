//! Holdback of room traffic while a client sleeps.
//!
//! Allocated only when a session goes to sleep and freed on wake, so an
//! awake session pays one null pointer for it. Memory is bounded by
//! `sleep_holdback_frames` shared `Bytes` plus one entry per skipped stream.

use bytes::Bytes;

use crate::ops::Skipped;
use crate::stream::StreamName;

/// What `Session::offer_push` did with a frame; the gateway counts these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued for transmission now.
    Sent,
    /// Held until the sleeping client wakes.
    Held,
    /// Not delivered; reported to the client in WAKE_ACK on wake.
    Skipped,
    /// Not delivered: the session is not established (before WELCOME or
    /// after close).
    Dropped,
}

/// Why a push is being delivered; decides what sleep does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushClass {
    /// Room broadcast: held, then skipped, while the client sleeps.
    Room,
    /// Addressed to this user (inbox): always delivered at once.
    Direct,
    /// Marked urgent (PUSH flag): always delivered at once, after the held
    /// frames of its own stream (which then go out with it).
    Urgent,
}

/// Frames held and streams skipped during one sleep.
#[derive(Debug, Default)]
pub(crate) struct Holdback {
    /// Room frames (encoded PUSH) waiting for wake, in arrival order.
    pub(crate) held: Vec<Bytes>,
    /// Runs of skipped messages, in the order they started: the stream, its first skipped
    /// offset and how many. A stream has at most one open run (still skipping, the last of
    /// its runs); an urgent message of the stream closes it.
    runs: Vec<Run>,
}

#[derive(Debug)]
struct Run {
    skipped: Skipped,
    /// Still skipping: later room messages of the stream join this run.
    open: bool,
}

impl Holdback {
    /// Holds `frame` if there is room, else records it as skipped. Once a
    /// stream skipped, its later frames skip too (until an urgent message of
    /// the stream ends the run), so the client never sees a stream jump past
    /// a hole it was not told about.
    pub(crate) fn offer(
        &mut self,
        stream: &StreamName,
        offset: u64,
        frame: Bytes,
        bound: usize,
    ) -> PushOutcome {
        let open = self
            .runs
            .iter_mut()
            .find(|r| r.open && r.skipped.stream == *stream);
        if let Some(r) = open {
            r.skipped.count = r.skipped.count.saturating_add(1);
            r.skipped.resume_from = r.skipped.resume_from.min(offset);
            return PushOutcome::Skipped;
        }
        if self.held.len() < bound {
            self.held.push(frame);
            return PushOutcome::Held;
        }
        self.runs.push(Run {
            skipped: Skipped {
                stream: stream.clone(),
                resume_from: offset,
                count: 1,
            },
            open: true,
        });
        PushOutcome::Skipped
    }

    /// An urgent message of `stream` is going out: takes the stream's held
    /// frames (to be sent first, in order, so the stream stays in offset
    /// order) and ends its skipped run (the urgent message lies past it).
    pub(crate) fn release(&mut self, stream: &StreamName) -> Vec<Bytes> {
        for r in &mut self.runs {
            if r.skipped.stream == *stream {
                r.open = false;
            }
        }
        let mut out = Vec::new();
        self.held.retain(|f| {
            let mine = f
                .get(crate::frame::HEADER_LEN..)
                .is_some_and(|body| stream.heads(body));
            if mine {
                out.push(f.clone());
            }
            !mine
        });
        out
    }

    /// The held frames and the WAKE_ACK entries: one per skipped run, so a
    /// stream appears once per run, in offset order.
    pub(crate) fn into_parts(self) -> (Vec<Bytes>, Vec<Skipped>) {
        (
            self.held,
            self.runs.into_iter().map(|r| r.skipped).collect(),
        )
    }
}
