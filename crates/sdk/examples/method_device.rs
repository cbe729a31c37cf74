//! A device (or module) that answers every direct method with status 200 and a
//! payload naming the method and echoing the request, until it is stopped.
//!
//! ```sh
//! cargo run -p twinhub-sdk --example method_device -- "<device or module connection string>" \
//!     --ca twinhub-data/ca.pem [--port 8883]
//! ```

use serde_json::json;
use twinhub_sdk::{DeviceClient, DeviceOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let connection_string = args
        .next()
        .ok_or("usage: method_device <connection string> [--ca PATH] [--port N]")?;
    let mut options = DeviceOptions::default();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ca" => options.ca_pem = Some(std::fs::read(value)?),
            "--port" => options.port = value.parse()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let (client, _desired) = DeviceClient::connect(&connection_string, options).await?;
    client
        .on_methods(|call| {
            println!("method {} {}", call.name, call.payload);
            (200, json!({"method": call.name, "request": call.payload}))
        })
        .await?;
    println!("answering direct methods; Ctrl-C stops");
    tokio::signal::ctrl_c().await?;
    client.disconnect().await?;
    Ok(())
}
