//! Agora AccessToken2 ("007") minting: the RTC + RTM token behind TEN's `POST /token/generate`.
//!
//! The byte layout and the signing chain are Agora's published AccessToken2 format; which services,
//! privileges and lifetimes go in follows TEN's server, which calls Agora's Go `BuildTokenWithRtm`
//! with the publisher role, the decimal uid as account and RTM user id, and one day for everything.
//!
//! One piece: about 420 lines of code (the rest is tests), all of it the one token layout.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long TEN's server lets a token, and every privilege in it, live: one day.
pub const TEN_EXPIRE_SECS: u32 = 86_400;

const VERSION: &str = "007";
const SERVICE_RTC: u16 = 1;
const SERVICE_RTM: u16 = 2;
const RTM_LOGIN: u16 = 1;
const ID_LEN: usize = 32;
const CHANNEL_MAX_BYTES: usize = 64;
/// Agora's builders document 255 bytes as the limit of an RTC account and an RTM user id.
const ACCOUNT_MAX_BYTES: usize = 255;
/// Agora's builders draw the salt from 1..99_999_999; staying in that range keeps our tokens ordinary.
const SALT_MAX: u32 = 99_999_998;
/// zlib's default level, as Agora's builders use. Each zlib frames the same bytes its own way (Go's
/// differs from C's, miniz_oxide from both) and Agora inflates before checking, so only the
/// inflated bytes have to match the published builders, and they do.
const ZLIB_LEVEL: u8 = 6;
/// Punctuation Agora accepts in a channel name, besides ASCII letters, digits and the space.
const CHANNEL_PUNCTUATION: &str = "!#$%&()+-:;<=.>?@[]^_{}|~,";

/// Why a token could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the Agora app id must be 32 hexadecimal characters")]
    AppId,
    #[error("the Agora app certificate must be 32 hexadecimal characters")]
    Certificate,
    #[error("channel_name is empty")]
    ChannelEmpty,
    #[error(
        "channel_name contains {0:?}; Agora allows ASCII letters, digits, the space and !#$%&()+-:;<=.>?@[]^_{{}}|~,"
    )]
    ChannelChar(char),
    #[error("{field} is {len} bytes; Agora allows at most {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("uid must be an integer from 0 to 4294967295, not {0}")]
    Uid(i64),
    #[error("a token needs at least one service")]
    NoService,
    #[error("the system clock is outside 1970..2106, which a token's issue time cannot carry")]
    Clock,
    #[error("no randomness for the token salt: {0}")]
    Random(getrandom::Error),
    #[error("the HMAC-SHA256 key was rejected")]
    Hmac,
}

impl TokenError {
    /// True when the caller's input is at fault (a 400), false for our settings or machine (a 500).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            TokenError::ChannelEmpty
                | TokenError::ChannelChar(_)
                | TokenError::TooLong { .. }
                | TokenError::Uid(_)
        )
    }
}

/// What an RTC service lets its holder do; the discriminants are Agora's wire codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RtcPrivilege {
    JoinChannel = 1,
    PublishAudio = 2,
    PublishVideo = 3,
    PublishData = 4,
}

impl RtcPrivilege {
    /// Everything the publisher role holds; the subscriber role holds only `JoinChannel`.
    pub const PUBLISHER: [RtcPrivilege; 4] = [
        RtcPrivilege::JoinChannel,
        RtcPrivilege::PublishAudio,
        RtcPrivilege::PublishVideo,
        RtcPrivilege::PublishData,
    ];
}

#[derive(Debug, Clone)]
struct Rtc {
    channel: String,
    account: String,
    privileges: BTreeMap<u16, u32>,
}

#[derive(Debug, Clone)]
struct Rtm {
    user_id: String,
    login_expire_secs: u32,
}

/// One token's content before signing: at most one service of each type, packed in type order.
///
/// Every lifetime is in seconds from `issued_at`, as AccessToken2 counts them.
#[derive(Debug, Clone)]
pub struct AccessToken2 {
    app_id: String,
    issued_at: u32,
    expire_secs: u32,
    salt: u32,
    rtc: Option<Rtc>,
    rtm: Option<Rtm>,
}

impl AccessToken2 {
    /// An empty token for `app_id`; add services, then `sign`.
    pub fn new(app_id: &str, issued_at: u32, expire_secs: u32, salt: u32) -> AccessToken2 {
        AccessToken2 {
            app_id: app_id.to_owned(),
            issued_at,
            expire_secs,
            salt,
            rtc: None,
            rtm: None,
        }
    }

    /// Grants `privileges` in `channel` to `account` (a decimal uid or a user account string).
    pub fn with_rtc(
        mut self,
        channel: &str,
        account: &str,
        privileges: &[(RtcPrivilege, u32)],
    ) -> AccessToken2 {
        self.rtc = Some(Rtc {
            channel: channel.to_owned(),
            account: account.to_owned(),
            privileges: privileges.iter().map(|&(p, e)| (p as u16, e)).collect(),
        });
        self
    }

    /// Grants RTM login to `user_id` for `login_expire_secs`.
    pub fn with_rtm(mut self, user_id: &str, login_expire_secs: u32) -> AccessToken2 {
        self.rtm = Some(Rtm {
            user_id: user_id.to_owned(),
            login_expire_secs,
        });
        self
    }

    /// The token string: "007" and the base64 of the zlib of the signature and the content.
    pub fn sign(&self, app_certificate: &str) -> Result<String, TokenError> {
        if !is_hex_id(app_certificate) {
            return Err(TokenError::Certificate);
        }
        let content = self.content()?;
        let key = signing_key(app_certificate, self.issued_at, self.salt)?;
        let signature = hmac_sha256(&key, &content)?;
        let mut signed = Vec::with_capacity(2 + signature.len() + content.len());
        put_bytes(&mut signed, "signature", &signature, signature.len())?;
        signed.extend_from_slice(&content);
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(&signed, ZLIB_LEVEL);
        Ok(format!("{VERSION}{}", BASE64.encode(packed)))
    }

    /// The signed part; every field is checked here, so no path signs an unchecked one.
    fn content(&self) -> Result<Vec<u8>, TokenError> {
        if !is_hex_id(&self.app_id) {
            return Err(TokenError::AppId);
        }
        let services = u16::from(self.rtc.is_some()) + u16::from(self.rtm.is_some());
        if services == 0 {
            return Err(TokenError::NoService);
        }
        let mut out = Vec::with_capacity(256);
        put_bytes(&mut out, "app id", self.app_id.as_bytes(), ID_LEN)?;
        out.extend_from_slice(&self.issued_at.to_le_bytes());
        out.extend_from_slice(&self.expire_secs.to_le_bytes());
        out.extend_from_slice(&self.salt.to_le_bytes());
        out.extend_from_slice(&services.to_le_bytes());
        if let Some(rtc) = &self.rtc {
            check_channel(&rtc.channel)?;
            out.extend_from_slice(&SERVICE_RTC.to_le_bytes());
            put_privileges(&mut out, &rtc.privileges)?;
            put_bytes(
                &mut out,
                "channel_name",
                rtc.channel.as_bytes(),
                CHANNEL_MAX_BYTES,
            )?;
            put_bytes(
                &mut out,
                "rtc account",
                rtc.account.as_bytes(),
                ACCOUNT_MAX_BYTES,
            )?;
        }
        if let Some(rtm) = &self.rtm {
            out.extend_from_slice(&SERVICE_RTM.to_le_bytes());
            put_privileges(
                &mut out,
                &BTreeMap::from([(RTM_LOGIN, rtm.login_expire_secs)]),
            )?;
            put_bytes(
                &mut out,
                "rtm user id",
                rtm.user_id.as_bytes(),
                ACCOUNT_MAX_BYTES,
            )?;
        }
        Ok(out)
    }
}

/// The RTC + RTM token TEN's server makes for `uid` in `channel`, for the same issue time and salt.
///
/// The publisher role (join, publish audio, video and data) in `channel` and RTM login, all for
/// `expire_secs`; the RTC account and the RTM user id are both the uid in decimal, "0" included.
pub fn access_token2(
    app_id: &str,
    app_certificate: &str,
    channel: &str,
    uid: u32,
    expire_secs: u32,
    issued_at: u32,
    salt: u32,
) -> Result<String, TokenError> {
    let account = uid.to_string();
    let privileges = RtcPrivilege::PUBLISHER.map(|p| (p, expire_secs));
    AccessToken2::new(app_id, issued_at, expire_secs, salt)
        .with_rtc(channel, &account, &privileges)
        .with_rtm(&account, expire_secs)
        .sign(app_certificate)
}

/// An Agora App ID and, when the project has certificates enabled, its certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    app_id: String,
    certificate: Option<String>,
}

impl Credentials {
    /// Checks both once, so a bad setting fails at startup and not on a request.
    ///
    /// An empty certificate counts as none, as TEN reads an empty `AGORA_APP_CERTIFICATE`.
    pub fn new(app_id: &str, certificate: Option<&str>) -> Result<Credentials, TokenError> {
        if !is_hex_id(app_id) {
            return Err(TokenError::AppId);
        }
        let certificate = certificate.filter(|c| !c.is_empty());
        if certificate.is_some_and(|c| !is_hex_id(c)) {
            return Err(TokenError::Certificate);
        }
        Ok(Credentials {
            app_id: app_id.to_owned(),
            certificate: certificate.map(str::to_owned),
        })
    }

    /// The App ID, which TEN's answer carries as `appId`.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// False when the project runs without certificates and the App ID alone is the token.
    pub fn has_certificate(&self) -> bool {
        self.certificate.is_some()
    }

    /// `token_at` issued now with a fresh random salt.
    pub fn token(&self, channel: &str, uid: u32) -> Result<String, TokenError> {
        if self.certificate.is_none() {
            // The App ID answer has no issue time or salt: spend neither the clock nor entropy.
            return self.token_at(channel, uid, 0, 0);
        }
        self.token_at(channel, uid, unix_now()?, random_salt()?)
    }

    /// What TEN's `POST /token/generate` answers as `token`: the App ID itself when there is no
    /// certificate, else `access_token2` for one day (`TEN_EXPIRE_SECS`).
    pub fn token_at(
        &self,
        channel: &str,
        uid: u32,
        issued_at: u32,
        salt: u32,
    ) -> Result<String, TokenError> {
        match &self.certificate {
            None => {
                check_channel(channel)?;
                Ok(self.app_id.clone())
            }
            Some(certificate) => access_token2(
                &self.app_id,
                certificate,
                channel,
                uid,
                TEN_EXPIRE_SECS,
                issued_at,
                salt,
            ),
        }
    }
}

impl fmt::Debug for Credentials {
    /// Never prints the certificate: it signs every token of the project.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("app_id", &self.app_id)
            .field(
                "certificate",
                &self.certificate.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A uid from a JSON integer; TEN's server reads it as a Go `uint32`.
pub fn uid_from_i64(raw: i64) -> Result<u32, TokenError> {
    u32::try_from(raw).map_err(|_| TokenError::Uid(raw))
}

fn is_hex_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Agora's channel-name rules; a blank name is refused first, as TEN's server does.
fn check_channel(channel: &str) -> Result<(), TokenError> {
    if channel.trim().is_empty() {
        return Err(TokenError::ChannelEmpty);
    }
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || c == ' ' || CHANNEL_PUNCTUATION.contains(c);
    if let Some(bad) = channel.chars().find(|&c| !allowed(c)) {
        return Err(TokenError::ChannelChar(bad));
    }
    if channel.len() > CHANNEL_MAX_BYTES {
        return Err(TokenError::TooLong {
            field: "channel_name",
            len: channel.len(),
            max: CHANNEL_MAX_BYTES,
        });
    }
    Ok(())
}

/// A little-endian u16 length, then the bytes.
fn put_bytes(
    out: &mut Vec<u8>,
    field: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<(), TokenError> {
    let too_long = TokenError::TooLong {
        field,
        len: bytes.len(),
        max,
    };
    if bytes.len() > max {
        return Err(too_long);
    }
    let len = u16::try_from(bytes.len()).map_err(|_| too_long)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// A count, then (privilege, lifetime) pairs in ascending privilege order.
fn put_privileges(out: &mut Vec<u8>, privileges: &BTreeMap<u16, u32>) -> Result<(), TokenError> {
    let count = u16::try_from(privileges.len()).map_err(|_| TokenError::TooLong {
        field: "privileges",
        len: privileges.len(),
        max: usize::from(u16::MAX),
    })?;
    out.extend_from_slice(&count.to_le_bytes());
    for (privilege, expire) in privileges {
        out.extend_from_slice(&privilege.to_le_bytes());
        out.extend_from_slice(&expire.to_le_bytes());
    }
    Ok(())
}

/// HMAC(salt, HMAC(issue time, certificate)): the certificate as its ASCII text, numbers little-endian.
fn signing_key(certificate: &str, issued_at: u32, salt: u32) -> Result<[u8; 32], TokenError> {
    let by_time = hmac_sha256(&issued_at.to_le_bytes(), certificate.as_bytes())?;
    hmac_sha256(&salt.to_le_bytes(), &by_time)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<[u8; 32], TokenError> {
    // HMAC takes keys of any length; the error exists only for fixed-key MACs sharing the trait.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| TokenError::Hmac)?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

fn unix_now() -> Result<u32, TokenError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| TokenError::Clock)?
        .as_secs();
    u32::try_from(secs).map_err(|_| TokenError::Clock)
}

/// Uniform enough in 1..=SALT_MAX: the salt only has to differ between tokens of the same second.
fn random_salt() -> Result<u32, TokenError> {
    let mut bytes = [0u8; 4];
    getrandom::getrandom(&mut bytes).map_err(TokenError::Random)?;
    Ok(u32::from_le_bytes(bytes) % SALT_MAX + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The fixed inputs of Agora's own builder tests (AgoraIO/Tools, DynamicKey/AgoraDynamicKey).
    const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
    const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";
    const CHANNEL: &str = "7d72365eb983485397e3e3f9d460bdda";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn content_layout_matches_a_published_rtc_and_rtm_token() {
        // The inflated content, after the signature, of the Python-built RTC + RTM token that
        // AgoraIO/Tools' Go suite parses (accesstoken_test.go, commit 3226f86a, the one TEN pins).
        let expected = concat!(
            "2000",
            "3937304341333564653630633434363435626261653861323135303631623333",
            "47f41000",
            "58020000",
            "01000000",
            "0200",
            "0100",
            "0400",
            "010058020000",
            "020058020000",
            "030058020000",
            "040058020000",
            "2000",
            "3764373233363565623938333438353339376533653366396434363062646461",
            "0a00",
            "32383832333431323733",
            "0200",
            "0100",
            "010058020000",
            "0900",
            "746573745f75736572",
        );
        let privileges = RtcPrivilege::PUBLISHER.map(|p| (p, 600));
        let token = AccessToken2::new(APP_ID, 1_111_111, 600, 1)
            .with_rtc(CHANNEL, "2882341273", &privileges)
            .with_rtm("test_user", 600);
        assert_eq!(hex(&token.content().unwrap()), expected);
    }

    #[test]
    fn privileges_pack_in_code_order_whatever_order_they_are_given() {
        let shuffled = [
            (RtcPrivilege::PublishData, 4),
            (RtcPrivilege::JoinChannel, 1),
            (RtcPrivilege::PublishVideo, 3),
            (RtcPrivilege::PublishAudio, 2),
        ];
        let in_order = RtcPrivilege::PUBLISHER.map(|p| (p, p as u32));
        let a = AccessToken2::new(APP_ID, 1, 2, 3).with_rtc("c", "1", &shuffled);
        let b = AccessToken2::new(APP_ID, 1, 2, 3).with_rtc("c", "1", &in_order);
        assert_eq!(a.content().unwrap(), b.content().unwrap());
    }

    #[test]
    fn signing_is_deterministic_for_fixed_time_and_salt() {
        let a = access_token2(APP_ID, CERT, "room", 7, 60, 1_700_000_000, 5).unwrap();
        let b = access_token2(APP_ID, CERT, "room", 7, 60, 1_700_000_000, 5).unwrap();
        let other_salt = access_token2(APP_ID, CERT, "room", 7, 60, 1_700_000_000, 6).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, other_salt);
        assert!(a.starts_with("007eJ"), "{a}");
    }

    #[test]
    fn app_id_and_certificate_must_be_32_hex_characters() {
        let short = &APP_ID[..31];
        let not_hex = "g70CA35de60c44645bbae8a215061b33";
        for bad in [short, not_hex, "", " 970CA35de60c44645bbae8a215061b3"] {
            assert_eq!(
                access_token2(bad, CERT, "c", 1, 60, 1, 1),
                Err(TokenError::AppId)
            );
            assert_eq!(
                access_token2(APP_ID, bad, "c", 1, 60, 1, 1),
                Err(TokenError::Certificate)
            );
            assert_eq!(Credentials::new(bad, None), Err(TokenError::AppId));
            assert_eq!(
                Credentials::new(APP_ID, Some(bad)).map(|_| ()),
                if bad.is_empty() {
                    Ok(())
                } else {
                    Err(TokenError::Certificate)
                }
            );
        }
        // Multibyte text of 32 bytes is not 32 hex characters.
        assert_eq!(
            Credentials::new(&"é".repeat(16), None),
            Err(TokenError::AppId)
        );
    }

    #[test]
    fn channel_names_follow_agoras_rules() {
        let sign = |channel: &str| access_token2(APP_ID, CERT, channel, 1, 60, 1, 1);
        assert_eq!(sign(""), Err(TokenError::ChannelEmpty));
        assert_eq!(sign("   "), Err(TokenError::ChannelEmpty));
        assert_eq!(sign("a/b"), Err(TokenError::ChannelChar('/')));
        assert_eq!(sign("café"), Err(TokenError::ChannelChar('é')));
        assert_eq!(sign("tab\there"), Err(TokenError::ChannelChar('\t')));
        assert_eq!(
            sign(&"x".repeat(65)),
            Err(TokenError::TooLong {
                field: "channel_name",
                len: 65,
                max: 64
            })
        );
        assert!(sign(&"x".repeat(64)).is_ok());
        let every_allowed = format!("aZ09 {CHANNEL_PUNCTUATION}");
        assert!(sign(&every_allowed).is_ok(), "{every_allowed}");
        // 26 + 26 + 10 + space + punctuation: the 89 characters Agora lists.
        assert_eq!(26 + 26 + 10 + 1 + CHANNEL_PUNCTUATION.len(), 89);
    }

    #[test]
    fn accounts_over_255_bytes_are_refused() {
        let long = "u".repeat(256);
        let rtc = AccessToken2::new(APP_ID, 1, 1, 1).with_rtc("c", &long, &[]);
        let rtm = AccessToken2::new(APP_ID, 1, 1, 1).with_rtm(&long, 1);
        for token in [rtc, rtm] {
            assert!(matches!(
                token.sign(CERT),
                Err(TokenError::TooLong {
                    len: 256,
                    max: 255,
                    ..
                })
            ));
        }
    }

    #[test]
    fn a_token_without_services_is_refused() {
        assert_eq!(
            AccessToken2::new(APP_ID, 1, 1, 1).sign(CERT),
            Err(TokenError::NoService)
        );
    }

    #[test]
    fn uid_range_is_that_of_a_u32() {
        assert_eq!(uid_from_i64(0), Ok(0));
        assert_eq!(uid_from_i64(4_294_967_295), Ok(u32::MAX));
        assert_eq!(
            uid_from_i64(4_294_967_296),
            Err(TokenError::Uid(4_294_967_296))
        );
        assert_eq!(uid_from_i64(-1), Err(TokenError::Uid(-1)));
    }

    #[test]
    fn without_a_certificate_the_app_id_is_the_token() {
        for certificate in [None, Some("")] {
            let creds = Credentials::new(APP_ID, certificate).unwrap();
            assert!(!creds.has_certificate());
            assert_eq!(creds.token("room", 42).unwrap(), APP_ID);
            assert_eq!(creds.token_at("room", 42, 9, 9).unwrap(), APP_ID);
            assert_eq!(creds.token("", 42), Err(TokenError::ChannelEmpty));
        }
    }

    #[test]
    fn with_a_certificate_the_token_is_tens_one_day_rtc_and_rtm() {
        let creds = Credentials::new(APP_ID, Some(CERT)).unwrap();
        assert!(creds.has_certificate());
        assert_eq!(
            creds.token_at("room", 42, 1_700_000_000, 77).unwrap(),
            access_token2(APP_ID, CERT, "room", 42, TEN_EXPIRE_SECS, 1_700_000_000, 77).unwrap()
        );
        let fresh = creds.token("room", 42).unwrap();
        assert!(fresh.starts_with(VERSION) && fresh != APP_ID);
        assert_eq!(creds.token("room/1", 42), Err(TokenError::ChannelChar('/')));
    }

    #[test]
    fn debug_never_shows_the_certificate() {
        let creds = Credentials::new(APP_ID, Some(CERT)).unwrap();
        let shown = format!("{creds:?}");
        assert!(!shown.contains(CERT), "{shown}");
        assert!(
            shown.contains(APP_ID) && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn salts_stay_in_the_builders_range() {
        for _ in 0..1000 {
            let salt = random_salt().unwrap();
            assert!((1..=SALT_MAX).contains(&salt), "{salt}");
        }
    }

    #[test]
    fn caller_faults_and_server_faults_are_told_apart() {
        assert!(TokenError::ChannelEmpty.is_bad_request());
        assert!(TokenError::Uid(-1).is_bad_request());
        assert!(!TokenError::Certificate.is_bad_request());
        assert!(!TokenError::Clock.is_bad_request());
    }
}
