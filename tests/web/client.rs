//! A browser as plain HTTP: follows no redirect, keeps the one cookie keyport sets, sends
//! forms as a page of keyport's would (`Sec-Fetch-Site: same-origin`), and keeps every body it
//! received so a test can check that no value ever came back.

use std::sync::Mutex;

/// A response: status, headers, body.
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookie: Vec<String>,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a 303 to `to`.
    #[track_caller]
    pub fn redirects_to(&self, to: &str) {
        assert_eq!(self.status, 303, "{}", self.body);
        assert_eq!(self.location.as_deref(), Some(to));
    }
}

pub struct Browser {
    agent: ureq::Agent,
    pub base: String,
    pub cookie: Option<String>,
    /// Every body received.
    pub seen: Mutex<String>,
}

pub fn form_encode(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                b => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Self {
            agent,
            base: base.to_string(),
            cookie: None,
            seen: Mutex::new(String::new()),
        }
    }

    /// `method path` (a path on this origin, or a whole URL) with extra headers and a body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Page {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(cookie) = &self.cookie {
            builder = builder.header("Cookie", format!("__Host-keyport={cookie}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if body.is_some() {
            builder = builder.header("Content-Type", "application/x-www-form-urlencoded");
        }
        let request = builder.body(body.unwrap_or_default().into_bytes()).unwrap();
        let mut response = self.agent.run(request).unwrap();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let get = |name: &str| -> Vec<String> {
            headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .collect()
        };
        let page = Page {
            status: response.status().as_u16(),
            location: get("location").into_iter().next(),
            set_cookie: get("set-cookie"),
            body: response.body_mut().read_to_string().unwrap_or_default(),
            headers,
        };
        self.seen.lock().unwrap().push_str(&page.body);
        page
    }

    pub fn get(&self, path: &str) -> Page {
        self.request("GET", path, &[], None)
    }

    /// A form POST as a keyport page sends it.
    pub fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_with(path, fields, &[("Sec-Fetch-Site", "same-origin")])
    }

    pub fn post_with(&self, path: &str, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> Page {
        self.request("POST", path, headers, Some(form_encode(fields)))
    }

    /// Follows a sign-in link the way a person does: the page, then its button. Keeps the
    /// session cookie.
    pub fn sign_in(&mut self, link: &str) -> Page {
        let confirm = self.get(link);
        assert_eq!(confirm.status, 200, "{}", confirm.body);
        let signed = self.post(link, &[]);
        signed.redirects_to("/secrets");
        self.cookie = Some(session_cookie(&signed).expect("a session cookie"));
        signed
    }

    /// Fails if any body so far contained `value`.
    #[track_caller]
    pub fn assert_never_returned(&self, value: &str) {
        assert!(
            !self.seen.lock().unwrap().contains(value),
            "a page carried {value}"
        );
    }
}

/// The session token the response set, if any.
pub fn session_cookie(page: &Page) -> Option<String> {
    page.set_cookie.iter().find_map(|c| {
        let value = c.strip_prefix("__Host-keyport=")?.split(';').next()?;
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// A fresh sign-in link for the holder of `api`'s token.
pub fn link(api: &crate::common::Http) -> String {
    let r = api.send("POST", "users/me/web-login", &serde_json::json!({}));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["url"].as_str().unwrap().to_string()
}
