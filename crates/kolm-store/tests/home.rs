//! Where the home directory is: `$KOLM_HOME` wins when set and non-empty.
//! (One test in its own binary: it changes the environment.)

use kolm_store::{Home, HOME_ENV};

#[test]
fn kolm_home_overrides_the_platform_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var(HOME_ENV, dir.path());
    let home = Home::from_env().unwrap();
    assert_eq!(home.root(), dir.path());
    let store = home.store().unwrap();
    assert_eq!(store.root(), dir.path().join("store"));
    assert!(dir.path().join("store/blobs/sha256").is_dir());
    assert_eq!(home.keyring().keys_dir(), dir.path().join("keys"));

    std::env::set_var(HOME_ENV, "");
    if let Ok(platform) = Home::from_env() {
        assert_ne!(platform.root(), dir.path());
        assert!(
            platform.root().ends_with("kolm"),
            "{}",
            platform.root().display()
        );
    }
}
