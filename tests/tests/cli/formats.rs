//! Every output format and every `--help`, as snapshots.

use volley_tests::processes::volley;

const QUERY: &str = "SELECT * FROM (VALUES (1, 'plain', 1.5, NULL), (2, 'with | pipe, comma', -2.25, DATE '2024-01-02')) \
                     AS t(id, name, score, day) ORDER BY id";

#[test]
fn every_output_format_matches_its_snapshot() {
    let data = tempfile::tempdir().unwrap();
    for format in ["table", "csv", "tsv", "json", "ndjson", "markdown"] {
        let output = volley(&["sql", "-q", "--format", format, "-c", QUERY], data.path());
        assert!(
            output.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        insta::assert_snapshot!(
            format!("format_{format}"),
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

#[test]
fn a_table_longer_than_max_rows_says_how_many_rows_it_left_out() {
    let data = tempfile::tempdir().unwrap();
    let output = volley(
        &[
            "sql",
            "-q",
            "--format",
            "table",
            "--max-rows",
            "3",
            "-c",
            "SELECT unnest(range(1, 11)) AS n ORDER BY n",
        ],
        data.path(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    insta::assert_snapshot!(String::from_utf8_lossy(&output.stdout));
}

#[test]
fn every_help_text_matches_its_snapshot() {
    let data = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["sql", "--help"],
        vec!["submit", "--help"],
        vec!["jobs", "--help"],
    ] {
        let output = volley(&args, data.path());
        assert!(output.status.success());
        insta::assert_snapshot!(
            format!("help_{}", args.join("_").replace("--", "")),
            String::from_utf8_lossy(&output.stdout)
        );
    }
}
