//! Print every message of a room (and of this user's inbox) as it arrives.
//!
//! ```text
//! cargo run -p ringport-client --example subscribe -- 127.0.0.1:4666 <token> lobby
//! ```

use ringport_client::{Client, Event, Options};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(token), Some(room)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: subscribe <host:port> <token> <room>");
        std::process::exit(2);
    };
    let (client, mut events) = Client::connect(addr, token, Options::default()).await?;
    client.join(&room).await?;
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Message(m) => println!(
                "{} #{} {}",
                m.stream,
                m.offset,
                String::from_utf8_lossy(&m.payload)
            ),
            Event::NotRecovered {
                stream,
                reason,
                missing,
                epoch,
            } => println!("{stream}: {reason:?}, lost {missing:?}, now epoch {epoch}"),
            Event::Closed { text } => {
                eprintln!("closed: {text}");
                break;
            }
            other => eprintln!("{other:?}"),
        }
    }
    Ok(())
}
