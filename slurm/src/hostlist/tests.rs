use super::*;
use proptest::prelude::*;

fn names(expr: &str) -> Vec<String> {
    expand(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn error(expr: &str) -> HostlistError {
    expand(expr).expect_err(expr)
}

#[test]
fn plain_names_and_separators() {
    assert_eq!(names("a,b c\td\ne"), ["a", "b", "c", "d", "e"]);
    assert_eq!(names(",,a,, b ,"), ["a", "b"]);
    assert!(names("").is_empty());
    assert!(names(" , ").is_empty());
}

#[test]
fn ranges_and_lists() {
    assert_eq!(names("n[1-3,5]"), ["n1", "n2", "n3", "n5"]);
    assert_eq!(names("n[5]"), ["n5"]);
    assert_eq!(names("n[1-2],m[3-4]"), ["n1", "n2", "m3", "m4"]);
    assert_eq!(names("[1-2]"), ["1", "2"]);
}

#[test]
fn width_comes_from_the_low_bound() {
    assert_eq!(names("n[09-11]"), ["n09", "n10", "n11"]);
    assert_eq!(names("n[9-011]"), ["n9", "n10", "n11"]);
    assert_eq!(names("n[001-002]"), ["n001", "n002"]);
    assert_eq!(names("n[8-10]"), ["n8", "n9", "n10"]);
}

#[test]
fn several_groups_are_a_product_first_outermost() {
    assert_eq!(
        names("rack[1-2]-n[01-02]"),
        ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]
    );
    let many = names("rack[1-2]-n[001-003,010]");
    assert_eq!(many.len(), 8);
    assert_eq!(many[3], "rack1-n010");
    assert_eq!(many[4], "rack2-n001");
}

#[test]
fn suffix_after_the_last_bracket() {
    assert_eq!(names("gpu-[1-2]x"), ["gpu-1x", "gpu-2x"]);
    assert_eq!(names("a[1-2]b[3-4]c"), ["a1b3c", "a1b4c", "a2b3c", "a2b4c"]);
}

#[test]
fn duplicates_are_kept_in_order() {
    assert_eq!(names("n[1-2],n1,n[2]"), ["n1", "n2", "n1", "n2"]);
}

#[test]
fn descending_range_names_range_and_position() {
    let e = error("n[10-8]");
    assert_eq!(e.position, 2);
    assert_eq!(
        e.kind,
        HostlistErrorKind::DescendingRange {
            range: "10-8".into(),
            lo: 10,
            hi: 8
        }
    );
    let text = e.to_string();
    assert!(text.contains("`10-8`") && text.contains("byte 2"), "{text}");
    assert_eq!(error("a,n[1,5-3]").position, 6);
}

#[test]
fn malformed_brackets_and_bounds() {
    assert_eq!(error("n[1-2").kind, HostlistErrorKind::UnclosedBracket);
    assert_eq!(error("n[1-2").position, 1);
    assert_eq!(error("n1-2]").kind, HostlistErrorKind::UnopenedBracket);
    assert_eq!(error("n1-2]").position, 4);
    assert_eq!(error("n[]").kind, HostlistErrorKind::EmptyBrackets);
    assert_eq!(error("n[[1]]").kind, HostlistErrorKind::NestedBracket);
    assert_eq!(error("n[1,,2]").kind, HostlistErrorKind::EmptyItem);
    assert_eq!(error("n[1,,2]").position, 4);
    assert!(matches!(
        error("n[-1-2]").kind,
        HostlistErrorKind::NegativeBound { .. }
    ));
    assert!(matches!(
        error("n[1--2]").kind,
        HostlistErrorKind::NegativeBound { .. }
    ));
    assert_eq!(error("n[1--2]").position, 4);
    assert!(matches!(
        error("n[a-b]").kind,
        HostlistErrorKind::NotANumber { .. }
    ));
    assert!(matches!(
        error("n[1-b]").kind,
        HostlistErrorKind::NotANumber { .. }
    ));
    assert_eq!(error("n[1-b]").position, 4);
    assert!(matches!(
        error("n[1-]").kind,
        HostlistErrorKind::MissingBound { .. }
    ));
    assert!(matches!(
        error("n[+1]").kind,
        HostlistErrorKind::NotANumber { .. }
    ));
    assert!(matches!(
        error("n[99999999999999999999]").kind,
        HostlistErrorKind::NumberTooLarge { .. }
    ));
}

#[test]
fn size_limit_is_enforced_before_allocating() {
    assert_eq!(names("n[1-65536]").len(), MAX_HOSTS);
    assert!(matches!(
        error("n[1-65537]").kind,
        HostlistErrorKind::TooManyHosts { .. }
    ));
    assert!(matches!(
        error("n[1-65536],m1").kind,
        HostlistErrorKind::TooManyHosts { .. }
    ));
    // A product that would be astronomically large is refused without expanding it.
    let huge = "a[0-99999]b[0-99999]c[0-99999]d[0-99999]";
    assert!(matches!(
        error(huge).kind,
        HostlistErrorKind::TooManyHosts { .. }
    ));
    assert!(matches!(
        error("n[0-18446744073709551615]").kind,
        HostlistErrorKind::TooManyHosts { .. }
    ));
}

#[test]
fn compress_matches_scontrol_examples() {
    assert_eq!(
        compress(&["n1", "n2", "n3", "n5", "m1", "n010"]),
        "n[1-3,5],m1,n010"
    );
    assert_eq!(compress(&["n9", "n10", "n11"]), "n[9-11]");
    assert_eq!(compress(&["n09", "n10"]), "n[09-10]");
    assert_eq!(compress(&["n01", "n2"]), "n[01,2]");
    assert_eq!(compress(&["a", "b"]), "a,b");
    assert_eq!(compress(&["n1"]), "n1");
    assert_eq!(compress::<&str>(&[]), "");
}

fn host_name() -> impl Strategy<Value = String> {
    ("[a-c]{1,2}", prop::option::of(0u64..40), 0usize..4).prop_map(|(prefix, n, width)| match n {
        Some(n) => format!("{prefix}{n:0width$}"),
        None => prefix,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn compress_then_expand_round_trips(list in prop::collection::vec(host_name(), 0..40)) {
        let compressed = compress(&list);
        prop_assert_eq!(expand(&compressed).unwrap(), list);
    }

    #[test]
    fn expand_then_compress_then_expand_is_stable(
        groups in prop::collection::vec(("[a-c]{1,2}", 0u64..30, 0u64..10, 1usize..4), 1..5)
    ) {
        let expr = groups
            .iter()
            .map(|(p, lo, len, w)| format!("{p}[{lo:0w$}-{}]", lo + len))
            .collect::<Vec<_>>()
            .join(",");
        let first = expand(&expr).unwrap();
        prop_assert_eq!(expand(&compress(&first)).unwrap(), first);
    }

    #[test]
    fn expand_never_panics(text in "[a-z0-9\\[\\],\\- ]{0,40}") {
        let _ = expand(&text);
    }

    #[test]
    fn expand_never_panics_on_any_string(text in any::<String>()) {
        if let Err(e) = expand(&text) {
            prop_assert!(e.position <= text.len());
        }
    }
}

#[test]
fn three_groups_follow_slurms_order() {
    // What `scontrol show hostnames` prints: the last group fastest, then the first, and
    // the middle group slowest.
    assert_eq!(
        names("a[1-2]b[1-2]c[1-2]"),
        ["a1b1c1", "a1b1c2", "a2b1c1", "a2b1c2", "a1b2c1", "a1b2c2", "a2b2c1", "a2b2c2"]
    );
}
