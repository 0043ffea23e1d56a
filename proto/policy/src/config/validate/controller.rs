//! `listen` and `[controller]`: an agent either listens for controllers or dials out to the
//! controller service, never both and never neither.

use std::net::SocketAddr;
use std::path::Path;

use super::{Problems, existing_file};
use crate::config::DialOut;
use crate::config::raw::RawConfig;
use crate::dns::DnsName;

/// The agent's own address (`None` in dial-out mode, or a placeholder plus a problem when
/// it does not parse) and its dial-out settings.
pub(super) fn transport(
    p: &mut Problems,
    raw: &RawConfig,
    base: &Path,
    full: bool,
) -> (Option<SocketAddr>, Option<DialOut>) {
    let listen = raw.listen.as_ref().map(|l| match l.trim().parse() {
        Ok(a) => a,
        Err(_) => {
            p.add("listen", format!("{l:?} is not an IP:port address"));
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    });
    let dial = raw
        .controller
        .as_ref()
        .map(|c| dial_out(p, raw, c, base, full));
    match (&listen, &dial) {
        (Some(_), Some(_)) => p.add(
            "listen",
            "`listen` and `[controller] dial` exclude each other: an agent either listens for \
             controllers or dials out to the controller service; remove one",
        ),
        (None, None) => p.add(
            "listen",
            "set `listen` (the agent listens for controllers) or `[controller] dial` (it dials \
             out to the controller service and listens on nothing)",
        ),
        _ => {}
    }
    (listen, dial)
}

fn dial_out(
    p: &mut Problems,
    raw: &RawConfig,
    c: &crate::config::raw::RawController,
    base: &Path,
    full: bool,
) -> DialOut {
    if let Err(why) = check_host_port(&c.dial) {
        p.add("controller.dial", format!("{:?}: {why}", c.dial));
    }
    if let Err(why) = DnsName::new(&c.server_name) {
        p.add("controller.server_name", why.to_string());
    }
    let ca = match &c.ca {
        Some(ca) => existing_file(p, full, "controller.ca", base, ca),
        None => existing_file(p, false, "tls.ca", base, &raw.tls.ca),
    };
    let exit_on_disconnect_after = c
        .exit_on_disconnect_after
        .as_deref()
        .map(|d| p.duration("controller.exit_on_disconnect_after", d, false));
    DialOut {
        dial: c.dial.trim().to_owned(),
        server_name: c.server_name.clone(),
        ca,
        exit_on_disconnect_after,
    }
}

/// `host:port` with a port, `[v6]:port` for IPv6.
fn check_host_port(addr: &str) -> Result<(), &'static str> {
    let addr = addr.trim();
    if addr.contains("://") {
        return Err("give host:port without a scheme");
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("no port (expected host:port)");
    };
    if host.is_empty() {
        return Err("no host (expected host:port)");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 address goes in brackets, [::1]:7443");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("the port is not 1-65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::check_host_port;

    #[test]
    fn a_dial_address_needs_host_and_port() {
        for ok in ["controller.example:7443", "127.0.0.1:1", "[::1]:7443"] {
            assert_eq!(check_host_port(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("controller.example", "no port"),
            (":7443", "no host"),
            ("::1:7443", "brackets"),
            ("https://c:1", "scheme"),
            ("c:0", "1-65535"),
            ("c:http", "1-65535"),
        ] {
            assert!(check_host_port(bad).unwrap_err().contains(says), "{bad}");
        }
    }
}
