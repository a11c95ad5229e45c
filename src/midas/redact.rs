//! Keeping secrets out of logs and error messages.

/// Query parameters whose values are secrets (compared without regard to case).
const SECRET_PARAMS: [&str; 5] = ["token", "authtoken", "apikey", "password", "uploadtoken"];

const HIDDEN: &str = "***";

/// `url` with the values of secret query parameters and any `user:password@` replaced by `***`.
///
/// Works on the text as it is (no parsing, so nothing is re-encoded): what is logged is exactly
/// what was sent, minus the secrets.
pub fn redact(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((head, tail)) => (head, Some(tail)),
        None => (url, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((head, tail)) => (head, Some(tail)),
        None => (before_fragment, None),
    };
    let mut out = redact_userinfo(path);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query.split('&').map(redact_pair).collect();
        out.push_str(&pairs.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn redact_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((name, _)) if is_secret(name) => format!("{name}={HIDDEN}"),
        _ => pair.to_owned(),
    }
}

fn is_secret(name: &str) -> bool {
    SECRET_PARAMS
        .iter()
        .any(|secret| secret.eq_ignore_ascii_case(name))
}

/// `scheme://user:pw@host/...` → `scheme://***@host/...`
fn redact_userinfo(path: &str) -> String {
    let Some(scheme_end) = path.find("://") else {
        return path.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = path[authority_start..]
        .find('/')
        .map_or(path.len(), |i| authority_start + i);
    match path[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}{HIDDEN}{}",
            &path[..authority_start],
            &path[authority_start + at..]
        ),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_every_secret_parameter() {
        let url = "https://h/midas/api/json?method=midas.login&email=a%40b.c&apikey=K&appname=Default&token=T&password=P&uploadtoken=1%2F2%2FX";
        assert_eq!(
            redact(url),
            "https://h/midas/api/json?method=midas.login&email=a%40b.c&apikey=***&appname=Default&token=***&password=***&uploadtoken=***"
        );
    }

    #[test]
    fn parameter_names_are_compared_without_case() {
        assert_eq!(
            redact("http://h/download/?bitstream=3&offset=0&authToken=SECRET"),
            "http://h/download/?bitstream=3&offset=0&authToken=***"
        );
        assert_eq!(redact("http://h/?TOKEN=x"), "http://h/?TOKEN=***");
    }

    #[test]
    fn keeps_lookalike_names_and_urls_without_query() {
        assert_eq!(
            redact("http://h/?tokens=1&mytoken=2"),
            "http://h/?tokens=1&mytoken=2"
        );
        assert_eq!(redact("http://h/midas"), "http://h/midas");
        assert_eq!(redact("http://h/?token"), "http://h/?token");
    }

    #[test]
    fn hides_user_info_but_not_at_signs_in_the_path() {
        assert_eq!(
            redact("https://bob:pw@host:8080/midas?token=t#x"),
            "https://***@host:8080/midas?token=***#x"
        );
        assert_eq!(redact("https://host/a@b"), "https://host/a@b");
    }
}
