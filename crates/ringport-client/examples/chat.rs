//! Join a room, publish each stdin line to it, print everything said there.
//!
//! ```text
//! cargo run -p ringport-client --example chat -- 127.0.0.1:4666 <token> lobby
//! ```

use ringport_client::{Client, Event, Options};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(token), Some(room)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: chat <host:port> <token> <room>");
        std::process::exit(2);
    };
    let (client, mut events) = Client::connect(addr, token, Options::default()).await?;
    client.join(&room).await?;
    eprintln!(
        "joined {room} (session {}); type lines to publish",
        client.session_id()
    );

    let printer = tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Message(m) => {
                    println!(
                        "[{} #{}] {}",
                        m.stream,
                        m.offset,
                        String::from_utf8_lossy(&m.payload)
                    )
                }
                Event::NotRecovered {
                    stream, missing, ..
                } => {
                    println!("[{stream}] messages {missing:?} were lost")
                }
                Event::Closed { text } => {
                    eprintln!("closed: {text}");
                    break;
                }
                other => eprintln!("{other:?}"),
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if let Err(e) = client.publish(&room, line).await {
            eprintln!("publish failed: {e}");
        }
    }
    client.close().await;
    let _ = printer.await;
    Ok(())
}
