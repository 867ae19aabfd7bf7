//! SQL scripts as statements with line numbers, so that a client and the
//! scheduler number a script's statements alike in their error messages.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// One statement of a script and the line it starts on (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The line the statement starts on, from 1.
    pub line: u32,
    /// The statement's text.
    pub sql: String,
}

/// Splits a script at top-level semicolons, keeping each statement's line.
pub fn split_statements(script: &str) -> Result<Vec<Statement>, DataFusionError> {
    let tokens = Tokenizer::new(&GenericDialect {}, script)
        .tokenize_with_location()
        .map_err(|e| DataFusionError::Plan(format!("cannot read the script: {e}")))?;
    let mut statements = Vec::new();
    let mut sql = String::new();
    let mut line = None;
    for token in tokens {
        match &token.token {
            Token::SemiColon => {
                if let Some(line) = line.take() {
                    statements.push(Statement {
                        line,
                        sql: std::mem::take(&mut sql),
                    });
                }
                sql.clear();
            }
            Token::Whitespace(_) => sql.push_str(&token.token.to_string()),
            other => {
                if line.is_none() {
                    line = Some(token.span.start.line as u32);
                }
                sql.push_str(&other.to_string());
            }
        }
    }
    if let Some(line) = line {
        statements.push(Statement { line, sql });
    }
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_splits_into_statements_with_their_line_numbers() {
        let script =
            "-- setup\nCREATE VIEW v AS SELECT 1 AS x;\n\nSELECT ';' AS s,\n  x FROM v;\n SELECT 2";
        let statements = split_statements(script).unwrap();
        let lines: Vec<u32> = statements.iter().map(|s| s.line).collect();
        assert_eq!(
            lines,
            vec![2, 4, 6],
            "a leading comment is not the statement"
        );
        assert!(statements[1].sql.contains("';'"), "{:?}", statements[1]);
        assert!(statements[2].sql.trim() == "SELECT 2");
    }
}
