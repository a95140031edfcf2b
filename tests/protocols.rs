//! The protocols a site speaks in front of the module: an HTTPS listener with HTTP/2 (curl
//! `--http2`, verified against a test CA), a chunked session over HTTP/2, and a WebSocket upgrade
//! through a protected location. Chromium over HTTP/2: tests/browser/test/http2.test.js.

mod common;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::{Connector, Message};
use url::Url;

/// The contract's provider and protected server, behind `listen ... ssl` with `http2 on`, a
/// WebSocket location `/ws/` proxied to `ws_port`, and room for a chunked session's Cookie
/// header.
fn https_env(tls: &TestTls, ws_port: u16) -> Env {
    let server = PROTECTED_SERVER
        .replace(
            "listen 127.0.0.1:@PORT@;",
            &format!(
                "listen 127.0.0.1:@PORT@ ssl;\n        http2 on;\n        \
                 ssl_certificate {};\n        ssl_certificate_key {};\n        \
                 large_client_header_buffers 4 32k;",
                tls.cert.display(),
                tls.key.display()
            ),
        )
        .replace(
            "        location /public/",
            &format!(
                "        location /ws/ {{\n            oidc_auth keycloak;\n            \
                 proxy_pass http://127.0.0.1:{ws_port};\n            \
                 proxy_http_version 1.1;\n            \
                 proxy_set_header Upgrade $http_upgrade;\n            \
                 proxy_set_header Connection upgrade;\n        }}\n        location /public/"
            ),
        );
    let provider = PROVIDER_BLOCK.replace("cookie_secure      off;", "cookie_secure      on;");
    let opts = EnvOptions {
        http: format!("{provider}{server}"),
        scheme: "https",
        ..Default::default()
    };
    Env::start_with(opts)
}

fn https_browser(tls: &TestTls) -> Browser {
    Browser::patient(Duration::from_secs(20), Some(&tls.ca))
}

/// The Cookie header the browser sends to `url`.
fn cookie_for(b: &Browser, url: &str) -> String {
    b.jar
        .header_for(&Url::parse(url).unwrap())
        .expect("the browser has cookies for the site")
}

/// `curl --http2` to `page` trusting `ca`, with one `Cookie` field per entry of `cookies`
/// (HTTP/2 lets a client split them, RFC 9113 §8.2.3) and `extra` arguments.
fn h2(page: &str, ca: &str, cookies: &[String], extra: &[&str]) -> CurlResp {
    let mut args = vec!["--http2".to_string(), "--cacert".into(), ca.into()];
    for c in cookies {
        args.extend(["-H".into(), format!("Cookie: {c}")]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(page, &args)
}

/// The page was served over HTTP/2 to `user`.
fn assert_served_over_h2(r: &CurlResp, user: &str) {
    assert_eq!(
        (r.http_version.as_str(), r.status),
        ("2", 200),
        "{}",
        r.body
    );
    assert_eq!(
        r.upstream_header("x-auth-request-user").as_deref(),
        Some(user)
    );
}

#[test]
fn over_https_with_http2_a_logged_in_user_is_served_and_an_anonymous_api_call_gets_401() {
    let tls = TestTls::create();
    let env = https_env(&tls, free_port());
    let ca = tls.ca.display().to_string();
    let page = env.url("/app/page");

    // Before login: an API call over HTTP/2 gets 401, a page navigation goes to the provider.
    let r = curl(
        &page,
        &["--http2", "--cacert", &ca, "-H", "Accept: application/json"],
    );
    assert_eq!(r.http_version, "2", "curl did not speak HTTP/2 with nginx");
    assert_eq!(r.status, 401);
    let r = curl(
        &page,
        &["--http2", "--cacert", &ca, "-H", "Accept: text/html"],
    );
    assert_eq!((r.http_version.as_str(), r.status), ("2", 302));
    assert!(
        r.header("location")
            .is_some_and(|l| l.starts_with(&env.provider.issuer)
                && l.contains("redirect_uri=https%3A%2F%2F127.0.0.1")),
        "the login goes to the provider with an https callback: {:?}",
        r.header("location")
    );

    let mut b = https_browser(&tls);
    b.login_ok(&page, "demo");
    let r = h2(&page, &ca, &[cookie_for(&b, &page)], &[]);
    assert_served_over_h2(&r, "demo");
    assert_eq!(
        r.upstream_header("x-auth-request-email").as_deref(),
        Some("demo@example.com")
    );
    env.assert_error_log_is_clean();
}

#[test]
fn a_chunked_session_opens_over_http2_also_when_its_cookies_arrive_as_separate_fields() {
    let tls = TestTls::create();
    let env = https_env(&tls, free_port());
    let ca = tls.ca.display().to_string();
    let page = env.url("/app/big");
    let mut b = https_browser(&tls);
    b.login_ok(&page, "chunky");
    let chunks = b.jar.names_where(is_session_cookie);
    assert!(
        chunks.len() >= 3,
        "the session should be chunked: {chunks:?}"
    );

    // One Cookie field, as HTTP/1.1 clients send it.
    let r = h2(&page, &ca, &[cookie_for(&b, &page)], &[]);
    assert_served_over_h2(&r, "chunky");
    let groups = r
        .upstream_header("x-auth-request-groups")
        .unwrap_or_default();
    assert_eq!(groups.split(',').count(), 200, "groups: {groups}");

    // One field per cookie, as HTTP/2 lets a client split them (RFC 9113 8.2.3, Chromium
    // does): nginx joins the crumbs, and the session still opens — in any order.
    let field = |name: &String| format!("{name}={}", b.jar.get(name).unwrap());
    let fields: Vec<String> = chunks.iter().rev().map(field).collect();
    let r = h2(&page, &ca, &fields, &[]);
    assert_served_over_h2(&r, "chunky");
    // Our cookies stay ours: the upstream gets none of them.
    let upstream_cookie = r.upstream_header("cookie").unwrap_or_default();
    assert!(
        !upstream_cookie.contains("_oidc"),
        "the upstream got the session: {upstream_cookie}"
    );

    // A missing chunk over HTTP/2 is no session, not an error.
    let fields: Vec<String> = chunks.iter().skip(1).map(field).collect();
    let r = h2(&page, &ca, &fields, &["-H", "Accept: application/json"]);
    assert_eq!(r.status, 401);
    env.assert_error_log_is_clean();
}

/// A WebSocket echo server (tungstenite): answers each text or binary message with itself and
/// keeps the handshake headers (lowercase names) of every connection it accepted.
struct WsEcho {
    port: u16,
    handshakes: Arc<Mutex<Vec<HashMap<String, String>>>>,
    stop: Arc<AtomicBool>,
}

impl WsEcho {
    fn start() -> WsEcho {
        let listener = loop {
            if let Ok(l) = TcpListener::bind(("127.0.0.1", free_port())) {
                break l;
            }
        };
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (handshakes.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let seen = seen.clone();
                thread::spawn(move || {
                    // The signature is tungstenite's callback type.
                    #[allow(clippy::result_large_err)]
                    let keep = |req: &Request, resp: Response| {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect();
                        seen.lock().unwrap().push(headers);
                        Ok(resp)
                    };
                    let Ok(mut ws) = tungstenite::accept_hdr(stream, keep) else {
                        return;
                    };
                    while let Ok(msg) = ws.read() {
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        WsEcho {
            port,
            handshakes,
            stop,
        }
    }

    fn handshakes(&self) -> Vec<HashMap<String, String>> {
        self.handshakes.lock().unwrap().clone()
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A WebSocket client handshake (`wss://`, trusting the test CA) to `path` on nginx, with
/// `cookie` if given.
fn ws_connect(
    env: &Env,
    tls: &TestTls,
    path: &str,
    cookie: Option<&str>,
) -> Result<
    tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    tungstenite::Error,
> {
    let url = format!("wss://127.0.0.1:{}{path}", env.port);
    let mut req = url.into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("Cookie", c.parse().unwrap());
    }
    let pem = std::fs::read(&tls.ca).unwrap();
    let connector = native_tls::TlsConnector::builder()
        .add_root_certificate(native_tls::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let stream = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    tungstenite::client_tls_with_config(req, stream, None, Some(Connector::NativeTls(connector)))
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake interrupted"),
        })
}

#[test]
fn a_websocket_upgrades_through_a_protected_location_only_with_a_session() {
    let tls = TestTls::create();
    let echo = WsEcho::start();
    let env = https_env(&tls, echo.port);

    // Without a session the handshake is refused with 401, and the upstream never sees it.
    match ws_connect(&env, &tls, "/ws/chat", None) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        Err(e) => panic!("the anonymous handshake failed otherwise: {e}"),
        Ok(_) => panic!("an anonymous WebSocket was let through"),
    }
    assert!(echo.handshakes().is_empty());

    // With a session: 101, messages both ways, and the upstream knows who is on the line.
    let mut b = https_browser(&tls);
    b.login_ok(&env.url("/"), "demo");
    let cookie = cookie_for(&b, &env.url("/ws/chat"));
    let mut ws = ws_connect(&env, &tls, "/ws/chat", Some(&cookie)).expect("the upgrade");
    for text in ["hello", "a second message"] {
        ws.send(Message::text(text)).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(text));
    }
    ws.close(None).unwrap();
    let seen = echo.handshakes();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].get("x-auth-request-user").map(String::as_str),
        Some("demo")
    );
    assert_eq!(
        seen[0].get("upgrade").map(String::as_str),
        Some("websocket")
    );
    assert!(
        !seen[0].get("cookie").is_some_and(|c| c.contains("_oidc")),
        "the upstream got the session cookie: {:?}",
        seen[0].get("cookie")
    );

    // A tampered session cookie is no session: 401 again, nothing reaches the upstream.
    let tampered = cookie.replacen("_oidc=v1.", "_oidc=v1.AAAA", 1);
    match ws_connect(&env, &tls, "/ws/chat", Some(&tampered)) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("a tampered session was not refused: {:?}", other.err()),
    }
    assert_eq!(echo.handshakes().len(), 1);
    env.assert_error_log_is_clean();
}
