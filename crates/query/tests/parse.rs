//! Parser behaviour beyond the corpus: accepted forms, error positions and messages,
//! limits (length, nesting), and the rules on aggregates, GROUP BY and `devices.jobs`.

use twinhub_query::{
    Aggregate, Collection, CompareOp, Expr, Literal, Path, Projection, Query, QueryError,
    QueryErrorKind, Select, MAX_EXPRESSION_DEPTH, MAX_QUERY_LENGTH,
};

fn parse(text: &str) -> Query {
    Query::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn error(text: &str) -> QueryError {
    match Query::parse(text) {
        Ok(q) => panic!("{text} parsed as {q}"),
        Err(e) => e,
    }
}

fn condition(text: &str) -> Expr {
    parse(&format!("SELECT * FROM devices WHERE {text}"))
        .condition
        .unwrap_or_else(|| panic!("no condition in {text}"))
}

fn path(names: &[&str]) -> Path {
    Path::new(names.iter().copied()).unwrap_or_else(|| panic!("empty path"))
}

#[test]
fn syntax_errors_name_position_expectation_and_token() {
    assert_eq!(
        error("SELECT * WHERE x = 1").to_string(),
        "Syntax error at position 10: expected FROM, found 'WHERE'"
    );
    assert_eq!(
        error("SELECT deviceId FROM devices WHERE").to_string(),
        "Syntax error at position 35: expected an expression, found end of query"
    );
    assert_eq!(
        error("SELECT * FROM devices WHERE a = 'x' b").to_string(),
        "Syntax error at position 37: expected an operator, GROUP BY or end of query, found 'b'"
    );
    assert_eq!(
        error("SELECT * FROM things").to_string(),
        "Syntax error at position 15: expected devices, devices.modules or devices.jobs, found 'things'"
    );
    assert!(error("SELECT * FROM devices.twins")
        .to_string()
        .contains("expected modules or jobs"));
    assert!(error("SELECT deviceId status FROM devices")
        .to_string()
        .contains("expected AS, ',' or FROM, found 'status'"));
}

#[test]
fn positions_count_characters() {
    let e = error("SELECT * FROM devices WHERE tags.é = 'é' #");
    assert_eq!(
        e.to_string(),
        "Syntax error at position 42: unexpected character '#'"
    );
}

#[test]
fn keywords_and_functions_in_any_case() {
    let q = parse("sElEcT tOp 3 * FrOm DeViCeS.MoDuLeS wHeRe Is_DeFiNeD(tags.x) AnD nOt tags.y iN [1] Or tags.z nIn [2]");
    assert_eq!(q.top, Some(3));
    assert_eq!(q.collection, Collection::Modules);
    assert_eq!(
        q.to_string(),
        "SELECT TOP 3 * FROM devices.modules WHERE IS_DEFINED(tags.x) AND NOT tags.y IN [1] OR tags.z NIN [2]"
    );
}

#[test]
fn and_binds_tighter_than_or_and_arithmetic_is_left_associative() {
    assert_eq!(
        condition("a = 1 OR b = 2 AND c = 3").to_string(),
        "a = 1 OR b = 2 AND c = 3"
    );
    assert!(matches!(condition("a = 1 OR b = 2 AND c = 3"), Expr::Or(ref v) if v.len() == 2));
    assert_eq!(condition("(a - b) - c = 1").to_string(), "a - b - c = 1");
    assert_eq!(condition("a - (b - c) = 1").to_string(), "a - (b - c) = 1");
    assert_eq!(condition("a + b * c = 1").to_string(), "a + b * c = 1");
    assert_eq!(condition("(a + b) * c = 1").to_string(), "(a + b) * c = 1");
}

#[test]
fn comparisons_do_not_chain() {
    assert!(error("SELECT * FROM devices WHERE a = b = c")
        .to_string()
        .contains("found '='"));
}

#[test]
fn negative_number_is_a_constant() {
    assert_eq!(
        condition("x > -5"),
        Expr::Compare {
            op: CompareOp::Gt,
            left: Box::new(Expr::Path(path(&["x"]))),
            right: Box::new(Expr::Literal(Literal::Number(-5.0))),
        }
    );
    assert!(
        matches!(condition("-x = 1"), Expr::Compare { ref left, .. } if matches!(**left, Expr::Neg(_)))
    );
}

#[test]
fn literals() {
    assert_eq!(
        condition("x IN [true, false, null, undefined, 'a', \"b\", 0x1F, .5]").to_string(),
        "x IN [true, false, null, undefined, 'a', 'b', 31, 0.5]"
    );
}

#[test]
fn quoted_names_and_reserved_words() {
    assert_eq!(
        condition("tags.[[group]] = 'alpha'").to_string(),
        "tags.[[group]] = 'alpha'"
    );
    for word in [
        "group", "select", "from", "in", "and", "by", "top", "as", "null",
    ] {
        let e = error(&format!("SELECT * FROM devices WHERE tags.{word} = 1"));
        assert!(e.to_string().contains("reserved word"), "{word}: {e}");
    }
    // Not reserved: names of functions, aggregates, collections, ORDER.
    for word in [
        "count",
        "order",
        "devices",
        "modules",
        "startswith",
        "status",
    ] {
        parse(&format!("SELECT * FROM devices WHERE tags.{word} = 1"));
    }
    assert!(error("SELECT * FROM devices WHERE tags.[[x")
        .to_string()
        .contains("']]'"));
}

#[test]
fn collection_prefix_is_dropped_from_paths() {
    let q = parse("SELECT devices.deviceId, devices.modules.moduleId FROM devices.modules WHERE devices.modules.tags.x = 1");
    assert_eq!(
        q.to_string(),
        "SELECT deviceId, moduleId FROM devices.modules WHERE tags.x = 1"
    );
    // In a devices query `modules` is an ordinary name; quoted `[[devices]]` is a name too.
    let q = parse("SELECT devices.modules.x, [[devices]].y FROM devices");
    assert_eq!(
        q.to_string(),
        "SELECT modules.x, [[devices]].y FROM devices"
    );
    let q = parse("SELECT * FROM devices.jobs WHERE devices.jobs.status = 'completed'");
    assert_eq!(q.condition.unwrap().to_string(), "status = 'completed'");
    // A lone `devices` is kept (it would otherwise be an empty path).
    assert_eq!(condition("devices = 1").to_string(), "[[devices]] = 1");
}

#[test]
fn top_must_be_a_non_negative_integer() {
    assert_eq!(parse("SELECT TOP 0 * FROM devices").top, Some(0));
    assert_eq!(parse("SELECT TOP 0x10 * FROM devices").top, Some(16));
    for bad in ["TOP -1", "TOP 1.5", "TOP x", "TOP", "TOP 1e300"] {
        let e = error(&format!("SELECT {bad} * FROM devices"));
        assert!(e.to_string().contains("non-negative integer"), "{bad}: {e}");
    }
}

#[test]
fn functions_are_checked_by_name_and_arity() {
    let e = error("SELECT * FROM devices WHERE STARTS_WITH(deviceId, 'a')");
    assert_eq!(
        e.to_string(),
        "Syntax error at position 29: unknown function 'STARTS_WITH' (twin queries spell it STARTSWITH)"
    );
    assert!(
        error("SELECT * FROM devices WHERE ENDS_WITH(deviceId, 'a')")
            .to_string()
            .contains("ENDSWITH")
    );
    assert!(error("SELECT * FROM devices WHERE IS_DEFINED(a, b)")
        .to_string()
        .contains("IS_DEFINED takes 1 argument(s), found 2"));
    assert!(error("SELECT * FROM devices WHERE SUBSTRING('a')")
        .to_string()
        .contains("2 to 3"));
    assert!(error("SELECT * FROM devices WHERE CONCAT('a')")
        .to_string()
        .contains("at least 2"));
    assert!(error("SELECT * FROM devices WHERE tags.x(1)")
        .to_string()
        .contains("found '('"));
}

#[test]
fn aggregates_only_as_whole_select_items() {
    let q = parse(
        "SELECT COUNT() AS n, sum(tags.a), Avg(tags.a + 1), MIN(tags.a), max(tags.a) FROM devices",
    );
    let Select::Items(items) = &q.select else {
        panic!("projection expected")
    };
    assert!(matches!(
        items[0].value,
        Projection::Aggregate(Aggregate::Count)
    ));
    assert_eq!(
        q.to_string(),
        "SELECT COUNT() AS n, SUM(tags.a), AVG(tags.a + 1), MIN(tags.a), MAX(tags.a) FROM devices"
    );
    for bad in [
        "SELECT * FROM devices WHERE COUNT() > 1",
        "SELECT COUNT() + 1 FROM devices",
        "SELECT SUM(COUNT()) FROM devices",
        "SELECT 1 + SUM(tags.a) FROM devices",
        "SELECT COUNT(deviceId) FROM devices",
    ] {
        assert_eq!(error(bad).kind(), QueryErrorKind::Syntax, "{bad}");
    }
}

#[test]
fn aggregate_and_group_by_rules() {
    parse("SELECT tags.a, COUNT() FROM devices GROUP BY tags.a");
    parse("SELECT TAGS.A AS a FROM devices GROUP BY tags.a");
    parse("SELECT COUNT() FROM devices GROUP BY tags.[[group]]");
    for bad in [
        "SELECT deviceId, COUNT() FROM devices",
        "SELECT * FROM devices GROUP BY tags.a",
        "SELECT tags.b, COUNT() FROM devices GROUP BY tags.a",
        "SELECT tags.a + 1, COUNT() FROM devices GROUP BY tags.a",
        "SELECT deviceId FROM devices.jobs",
        "SELECT COUNT() FROM devices.jobs",
    ] {
        assert_eq!(error(bad).kind(), QueryErrorKind::Invalid, "{bad}");
    }
    assert_eq!(
        error("SELECT COUNT() FROM devices GROUP BY tags.a, tags.b").kind(),
        QueryErrorKind::Syntax
    );
    assert_eq!(
        error("SELECT COUNT() FROM devices GROUP BY 1").kind(),
        QueryErrorKind::Syntax
    );
}

#[test]
fn select_star_stands_alone() {
    assert!(error("SELECT *, deviceId FROM devices")
        .to_string()
        .contains("expected FROM, found ','"));
    assert!(error("SELECT deviceId, * FROM devices")
        .to_string()
        .contains("found '*'"));
}

#[test]
fn lists_need_square_brackets_and_an_element() {
    assert!(error("SELECT * FROM devices WHERE x IN ('a')")
        .to_string()
        .contains("expected '['"));
    assert!(error("SELECT * FROM devices WHERE x IN []")
        .to_string()
        .contains("found ']'"));
    assert!(error("SELECT * FROM devices WHERE x IN ['a'")
        .to_string()
        .contains("expected ',' or ']'"));
}

#[test]
fn query_length_limit_is_8192_characters() {
    let prefix = "SELECT * FROM devices WHERE deviceId = '";
    let fill = |n: usize| format!("{prefix}{}'", "é".repeat(n - prefix.len() - 1));
    let exact = fill(MAX_QUERY_LENGTH);
    assert_eq!(exact.chars().count(), 8192);
    assert!(exact.len() > 8192, "multi-byte characters count once");
    parse(&exact);
    let over = fill(MAX_QUERY_LENGTH + 1);
    assert_eq!(error(&over), QueryError::TooLong { length: 8193 });
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let nested = |n: usize| format!("{}1{} = 1", "(".repeat(n), ")".repeat(n));
    condition(&nested(MAX_EXPRESSION_DEPTH - 2));
    let e = error(&format!("SELECT * FROM devices WHERE {}", nested(4000)));
    assert!(e.to_string().contains("nested too deeply"), "{e}");
    let nots = |n: usize| format!("{}true", "NOT ".repeat(n));
    condition(&nots(MAX_EXPRESSION_DEPTH - 1));
    assert!(
        error(&format!("SELECT * FROM devices WHERE {}", nots(2000)))
            .to_string()
            .contains("nested too deeply")
    );
    let negs = format!("SELECT * FROM devices WHERE {}x = 1", "-".repeat(3000));
    assert!(error(&negs).to_string().contains("nested too deeply"));
    let calls = format!(
        "SELECT * FROM devices WHERE {}1{} = 1",
        "ABS(".repeat(500),
        ")".repeat(500)
    );
    assert!(error(&calls).to_string().contains("nested too deeply"));
    // A long left-deep arithmetic chain is as deep as it is long.
    let chain = format!(
        "SELECT * FROM devices WHERE {} = 1",
        vec!["1"; 2000].join(" + ")
    );
    assert!(error(&chain).to_string().contains("nested too deeply"));
}

#[test]
fn long_flat_disjunctions_are_fine() {
    let ors: Vec<String> = (0..250).map(|i| format!("deviceId = 'd{i}'")).collect();
    let e = condition(&ors.join(" OR "));
    assert!(matches!(e, Expr::Or(ref v) if v.len() == 250));
}

#[test]
fn string_escapes_round_trip() {
    let e =
        condition(r#"tags.owner = 'O\'Brien' AND tags.q = "say \"hi\"" AND tags.u = '\u00e9\\'"#);
    assert_eq!(
        e.to_string(),
        r#"tags.owner = 'O\'Brien' AND tags.q = 'say "hi"' AND tags.u = 'é\\'"#
    );
}

#[test]
fn aliases_may_be_quoted_but_not_reserved() {
    let q = parse("SELECT deviceId AS [[the id]], tags.a AS [[from]] FROM devices");
    assert_eq!(
        q.to_string(),
        "SELECT deviceId AS [[the id]], tags.a AS [[from]] FROM devices"
    );
    assert!(error("SELECT deviceId AS from FROM devices")
        .to_string()
        .contains("expected a name after AS"));
}

#[test]
fn display_is_canonical_and_reparses() {
    for text in [
        "select   *   from devices where tags.a<>'x'",
        "SELECT TOP 5 deviceId, tags.a + -3 * (tags.b % 2) AS v FROM devices",
        "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices FROM devices GROUP BY properties.reported.telemetryConfig.status",
        "SELECT * FROM devices WHERE NOT (a = 1 OR b = 2) AND (c = 3 AND d = 4)",
        "SELECT * FROM devices WHERE - (5) = -(-5)",
    ] {
        let q = parse(text);
        let canonical = q.to_string();
        assert_eq!(parse(&canonical), q, "{text} -> {canonical}");
        assert_eq!(parse(&canonical).to_string(), canonical);
    }
}
