//! One connection's whole life over encoded bytes, as a client would see it:
//! resume handshake, join, pushes, sleep with holdback and skip, wake, ack,
//! heartbeat probe, close. Both directions go through the codec.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ringport_proto::*;

struct Wire {
    session: Session,
    now: u64,
}

impl Wire {
    /// Client sends `frames` (as one TCP read) and collects the server's reply.
    fn send(&mut self, frames: &[Frame]) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        for f in frames {
            f.encode(&mut buf).unwrap();
        }
        self.session.handle_input(&mut buf, self.now);
        self.recv()
    }

    fn recv(&mut self) -> Vec<Frame> {
        let mut rx = BytesMut::new();
        while let Some(b) = self.session.poll_transmit() {
            rx.extend_from_slice(&b);
        }
        let mut out = Vec::new();
        while let Some(f) = Decoder::default().decode(&mut rx).unwrap() {
            out.push(f);
        }
        assert!(rx.is_empty());
        out
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }
}

fn push(stream: &StreamName, offset: u64) -> Bytes {
    Frame::Push(Push {
        stream: stream.clone(),
        epoch: 1,
        offset,
        urgent: false,
        payload: Bytes::from(format!("m{offset}")),
    })
    .to_bytes()
    .unwrap()
}

#[test]
fn a_day_in_the_life_of_a_connection() {
    let cfg = Arc::new(SessionConfig {
        sleep_holdback_frames: 2,
        ..SessionConfig::default()
    });
    let mut w = Wire {
        session: Session::new(cfg, 0),
        now: 100,
    };
    let inbox = StreamName::User("u1".into());
    let lobby = StreamName::Room("lobby".into());

    // Handshake with resume.
    let resume = Resume {
        session_id: 9,
        streams: vec![ResumePoint {
            stream: inbox.clone(),
            epoch: 1,
            last_offset: 10,
        }],
    };
    let hello = Frame::Hello(Hello {
        token: Bytes::from_static(b"jwt"),
        client_info: "story".into(),
        resume: Some(resume.clone()),
    });
    assert!(w.send(&[hello]).is_empty());
    let Event::Hello {
        token, resume: r, ..
    } = w.events().remove(0)
    else {
        panic!("expected Hello");
    };
    assert_eq!((&token[..], r), (&b"jwt"[..], Some(resume)));
    let params = WelcomeParams {
        session_id: 9,
        epoch: 1,
        inbox_tail: 41,
        broadcast_epoch: 1,
        broadcast_tail: 0,
        user: "u42".into(),
        server_time_ms: 0,
    };
    w.session.accept(params, w.now).unwrap();
    let result = ResumeResult {
        stream: inbox.clone(),
        outcome: ResumeOutcome::Resumed,
        old_epoch: 1,
        new_epoch: 1,
        missing_from: 0,
        missing_to: 0,
    };
    w.session.send_resume_result(result.clone()).unwrap();
    let out = w.recv();
    assert!(matches!(
        out[0],
        Frame::Welcome(Welcome { session_id: 9, .. })
    ));
    assert_eq!(out[1], Frame::ResumeResult(result));

    // Join and a live push.
    let join = Frame::Join(RoomRequest {
        req_id: 1,
        room: "lobby".into(),
    });
    w.send(&[join]);
    assert_eq!(
        w.events(),
        [Event::Join {
            req_id: 1,
            room: "lobby".into()
        }]
    );
    w.session.reply_room(1, Status::OK, Some((1, 0))).unwrap();
    let shared = push(&lobby, 1);
    assert_eq!(
        w.session
            .offer_push(PushClass::Room, &lobby, 1, shared.clone()),
        PushOutcome::Sent
    );
    let out = w.recv();
    assert_eq!(out.len(), 2);
    assert!(matches!(&out[1], Frame::Push(p) if p.offset == 1));

    // Sleep: 2 held, then skipped from offset 4.
    w.now = 1_000;
    assert_eq!(
        w.send(&[Frame::Sleep {
            interval_ms: 600_000
        }]),
        [Frame::SleepAck {
            interval_ms: 300_000
        }]
    );
    let outcomes: Vec<PushOutcome> = (2..=5)
        .map(|o| {
            w.session
                .offer_push(PushClass::Room, &lobby, o, push(&lobby, o))
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            PushOutcome::Held,
            PushOutcome::Held,
            PushOutcome::Skipped,
            PushOutcome::Skipped
        ]
    );
    assert_eq!(
        w.session
            .offer_push(PushClass::Direct, &inbox, 11, push(&inbox, 11)),
        PushOutcome::Sent
    );
    assert!(matches!(&w.recv()[..], [Frame::Push(p)] if p.offset == 11));
    // The inbox ACK does not wake the client.
    w.send(&[Frame::Ack(Ack {
        stream: inbox.clone(),
        offset: 11,
    })]);
    assert_eq!(w.session.state(), State::Sleeping);

    // Wake: resume offsets first, then the held frames.
    w.now = 2_000;
    let out = w.send(&[Frame::Wake]);
    assert_eq!(
        out[0],
        Frame::WakeAck(WakeAck {
            skipped: vec![Skipped {
                stream: lobby.clone(),
                resume_from: 4,
                count: 2
            }]
        })
    );
    let held: Vec<u64> = out[1..]
        .iter()
        .map(|f| match f {
            Frame::Push(p) => p.offset,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(held, [2, 3]);

    // Silence: the server probes at +90 s, the client's PONG keeps it alive.
    w.now = 2_000 + 90_000;
    w.session.handle_timeout(w.now);
    let probe = w.recv();
    let [Frame::Ping { nonce }] = probe[..] else {
        panic!("expected a probe, got {probe:?}");
    };
    w.send(&[Frame::Pong { nonce }]);
    assert_eq!(w.session.poll_timeout(), Some(w.now + 90_000));

    // Client leaves.
    w.send(&[Frame::Close {
        reason: CloseReason::NORMAL,
        text: "bye".into(),
    }]);
    assert_eq!(w.session.state(), State::Closed);
    assert!(w.events().contains(&Event::Closed {
        reason: CloseReason::NORMAL,
        by_peer: true
    }));
}
