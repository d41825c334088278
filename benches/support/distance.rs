//! `BENCH_BROKER_DELAY_MS`: RabbitMQ and NATS reached through proxies that delay each of their
//! answers this long, as brokers on another host would be (this machine has no `netem`). The
//! raw publishers, the consumers and the relay all go through them, so references and drains
//! pay the same distance.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};

use super::settings::Settings;
use crate::harness::Proxy;

/// Puts RabbitMQ and NATS `delay` farther away: the settings' URLs then point at the proxies,
/// which live as long as the returned value.
pub async fn farther_brokers(s: &mut Settings, delay: Duration) -> Result<Vec<Proxy>> {
    let mut proxies = Vec::new();
    for (url, port) in [(&mut s.amqp_url, 5672), (&mut s.nats_url, 4222)] {
        let first = url.split(',').next().unwrap_or_default().trim().to_string();
        let mut parsed =
            url::Url::parse(&first).with_context(|| format!("{first} is not a URL"))?;
        let target: SocketAddr = *parsed
            .socket_addrs(|| Some(port))
            .with_context(|| format!("cannot resolve {first}"))?
            .first()
            .with_context(|| format!("{first} resolves to no address"))?;
        let proxy = Proxy::delaying(target, delay).await;
        parsed
            .set_ip_host(proxy.addr.ip())
            .map_err(|()| anyhow::anyhow!("{first}: cannot set the proxy's host"))?;
        parsed
            .set_port(Some(proxy.addr.port()))
            .map_err(|()| anyhow::anyhow!("{first}: cannot set the proxy's port"))?;
        *url = parsed.to_string();
        proxies.push(proxy);
    }
    Ok(proxies)
}
