//! Hand-written recursive-descent parser (grammar of spec §6.2) and the checks that the
//! grammar alone does not express (aggregates and GROUP BY, §7.8; `devices.jobs`, §5).
//!
//! Every error names the 1-based character position and what was expected. Recursion is
//! bounded twice: `nesting` counts the parser's own recursion (parentheses, NOT, unary
//! minus, function arguments) and each node's `depth` bounds the finished tree, including
//! left-deep operator chains such as `a + b + c + …`, so the recursive evaluator and `Drop`
//! stay shallow too.

use crate::ast::{
    is_keyword, Aggregate, ArithmeticOp, Collection, CompareOp, Expr, Function, Literal, Path,
    Projection, Query, Segment, Select, SelectItem,
};
use crate::error::{QueryError, MAX_EXPRESSION_DEPTH, MAX_QUERY_LENGTH};
use crate::lexer::{tokenize, Token, TokenKind};

/// Largest `TOP` value: beyond 2^53 the number token would not be exact.
const MAX_TOP: f64 = 9_007_199_254_740_992.0;

/// Parses and validates a query text.
pub(crate) fn parse_query(text: &str) -> Result<Query, QueryError> {
    // Byte length bounds the character count from above: skip counting short texts.
    if text.len() > MAX_QUERY_LENGTH {
        let length = text.chars().count();
        if length > MAX_QUERY_LENGTH {
            return Err(QueryError::TooLong { length });
        }
    }
    let tokens = tokenize(text)?;
    let collection = collection_hint(&tokens);
    let mut parser = Parser {
        end: tokens.last().cloned().unwrap_or(Token {
            kind: TokenKind::End,
            position: 1,
            text: String::new(),
        }),
        tokens,
        index: 0,
        nesting: 0,
        collection,
    };
    let query = parser.query()?;
    validate(&query)?;
    Ok(query)
}

/// The collection named after FROM, found before parsing so that paths in the select list
/// (which comes first) can drop a leading collection name. FROM is reserved, so its first
/// occurrence as a bare word is the clause. A malformed clause fails later in `query()`.
fn collection_hint(tokens: &[Token]) -> Collection {
    let word = |i: usize| match tokens.get(i).map(|t| &t.kind) {
        Some(TokenKind::Ident(w)) => Some(w.to_ascii_lowercase()),
        _ => None,
    };
    let Some(from) = (0..tokens.len()).find(|&i| word(i).as_deref() == Some("from")) else {
        return Collection::Devices;
    };
    let dotted = matches!(tokens.get(from + 2).map(|t| &t.kind), Some(TokenKind::Dot));
    match (dotted, word(from + 3).as_deref()) {
        (true, Some("modules")) => Collection::Modules,
        (true, Some("jobs")) => Collection::Jobs,
        _ => Collection::Devices,
    }
}

/// A parsed expression and the height of its tree.
struct Node {
    expr: Expr,
    depth: usize,
}

impl Node {
    fn leaf(expr: Expr) -> Node {
        Node { expr, depth: 1 }
    }
}

struct Parser {
    tokens: Vec<Token>,
    /// Returned by `peek` past the end (never reached: the last token is `End`).
    end: Token,
    index: usize,
    nesting: usize,
    collection: Collection,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.index).unwrap_or(&self.end)
    }

    fn peek_kind_at(&self, ahead: usize) -> &TokenKind {
        self.tokens
            .get(self.index + ahead)
            .map_or(&self.end.kind, |t| &t.kind)
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(&self.peek().kind, TokenKind::Ident(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.at_keyword(keyword);
        if found {
            self.index += 1;
        }
        found
    }

    fn eat(&mut self, kind: &TokenKind) -> bool {
        let found = &self.peek().kind == kind;
        if found {
            self.index += 1;
        }
        found
    }

    fn expected(&self, what: &str) -> QueryError {
        let token = self.peek();
        QueryError::syntax(
            token.position,
            format!("expected {what}, found {}", token.describe()),
        )
    }

    fn expect_keyword(&mut self, keyword: &str, what: &str) -> Result<(), QueryError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn expect(&mut self, kind: &TokenKind, what: &str) -> Result<(), QueryError> {
        if self.eat(kind) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn query(&mut self) -> Result<Query, QueryError> {
        self.expect_keyword("SELECT", "SELECT")?;
        let top = if self.eat_keyword("TOP") {
            Some(self.top_count()?)
        } else {
            None
        };
        let select = if self.eat(&TokenKind::Star) {
            Select::All
        } else {
            let mut items = vec![self.select_item()?];
            while self.eat(&TokenKind::Comma) {
                items.push(self.select_item()?);
            }
            Select::Items(items)
        };
        self.expect_keyword("FROM", "FROM")?;
        let collection = self.collection()?;
        let condition = if self.eat_keyword("WHERE") {
            Some(self.expr()?.expr)
        } else {
            None
        };
        let group_by = if self.eat_keyword("GROUP") {
            self.expect_keyword("BY", "BY after GROUP")?;
            Some(self.group_path()?)
        } else {
            None
        };
        if !matches!(self.peek().kind, TokenKind::End) {
            return Err(match (&condition, &group_by) {
                (None, None) => self.expected("WHERE, GROUP BY or end of query"),
                (Some(_), None) => self.expected("an operator, GROUP BY or end of query"),
                (_, Some(_)) => self.expected("end of query"),
            });
        }
        Ok(Query {
            top,
            select,
            collection,
            condition,
            group_by,
        })
    }

    fn top_count(&mut self) -> Result<u64, QueryError> {
        match self.peek().kind {
            TokenKind::Number(n) if n.fract() == 0.0 && (0.0..=MAX_TOP).contains(&n) => {
                self.index += 1;
                // Exact: integral, non-negative and at most 2^53.
                Ok(n as u64)
            }
            _ => Err(self.expected("a non-negative integer after TOP")),
        }
    }

    fn collection(&mut self) -> Result<Collection, QueryError> {
        const WHAT: &str = "devices, devices.modules or devices.jobs";
        if !self.eat_keyword("devices") {
            return Err(self.expected(WHAT));
        }
        if !self.eat(&TokenKind::Dot) {
            return Ok(Collection::Devices);
        }
        if self.eat_keyword("modules") {
            Ok(Collection::Modules)
        } else if self.eat_keyword("jobs") {
            Ok(Collection::Jobs)
        } else {
            Err(self.expected("modules or jobs after 'devices.'"))
        }
    }

    fn select_item(&mut self) -> Result<SelectItem, QueryError> {
        let value = match self.aggregate_name() {
            Some(name) => Projection::Aggregate(self.aggregate(&name)?),
            None => Projection::Expr(self.expr()?.expr),
        };
        let alias = if self.eat_keyword("AS") {
            Some(self.alias()?)
        } else {
            None
        };
        if !matches!(self.peek().kind, TokenKind::Comma) && !self.at_keyword("FROM") {
            return Err(self.expected(if alias.is_some() {
                "',' or FROM"
            } else {
                "AS, ',' or FROM"
            }));
        }
        Ok(SelectItem { value, alias })
    }

    /// The upper-case aggregate name when the next tokens are `COUNT(`, `SUM(`, ….
    fn aggregate_name(&self) -> Option<String> {
        match (&self.peek().kind, self.peek_kind_at(1)) {
            (TokenKind::Ident(name), TokenKind::LParen) => {
                let upper = name.to_ascii_uppercase();
                matches!(upper.as_str(), "COUNT" | "SUM" | "AVG" | "MIN" | "MAX").then_some(upper)
            }
            _ => None,
        }
    }

    fn aggregate(&mut self, name: &str) -> Result<Aggregate, QueryError> {
        self.index += 2; // name and '('
        if name == "COUNT" {
            self.expect(&TokenKind::RParen, "')' (COUNT takes no argument)")?;
            return Ok(Aggregate::Count);
        }
        let arg = self.expr()?.expr;
        self.expect(&TokenKind::RParen, "')'")?;
        Ok(match name {
            "SUM" => Aggregate::Sum(arg),
            "AVG" => Aggregate::Avg(arg),
            "MIN" => Aggregate::Min(arg),
            _ => Aggregate::Max(arg),
        })
    }

    fn alias(&mut self) -> Result<String, QueryError> {
        match &self.peek().kind {
            TokenKind::Ident(name) if !is_keyword(name) => {
                let name = name.clone();
                self.index += 1;
                Ok(name)
            }
            TokenKind::Quoted(name) => {
                let name = name.clone();
                self.index += 1;
                Ok(name)
            }
            _ => Err(self.expected("a name after AS")),
        }
    }

    fn group_path(&mut self) -> Result<Path, QueryError> {
        match &self.peek().kind {
            TokenKind::Ident(name) if !is_keyword(name) => self.path(),
            TokenKind::Quoted(_) => self.path(),
            _ => Err(self.expected("a property path after GROUP BY")),
        }
    }

    /// Counts one level of parser recursion.
    fn enter(&mut self) -> Result<(), QueryError> {
        self.nesting += 1;
        if self.nesting > MAX_EXPRESSION_DEPTH {
            return Err(self.too_deep());
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting = self.nesting.saturating_sub(1);
    }

    fn too_deep(&self) -> QueryError {
        QueryError::syntax(
            self.peek().position,
            format!("expression is nested too deeply (maximum {MAX_EXPRESSION_DEPTH} levels)"),
        )
    }

    /// Builds a node one level above `children`, rejecting trees that are too tall.
    fn node(&self, expr: Expr, children_depth: usize) -> Result<Node, QueryError> {
        let depth = children_depth + 1;
        if depth > MAX_EXPRESSION_DEPTH {
            return Err(self.too_deep());
        }
        Ok(Node { expr, depth })
    }

    fn expr(&mut self) -> Result<Node, QueryError> {
        self.enter()?;
        let node = self.or()?;
        self.leave();
        Ok(node)
    }

    fn or(&mut self) -> Result<Node, QueryError> {
        let first = self.and()?;
        if !self.at_keyword("OR") {
            return Ok(first);
        }
        let mut depth = first.depth;
        let mut operands = vec![first.expr];
        while self.eat_keyword("OR") {
            let next = self.and()?;
            depth = depth.max(next.depth);
            operands.push(next.expr);
        }
        self.node(Expr::Or(operands), depth)
    }

    fn and(&mut self) -> Result<Node, QueryError> {
        let first = self.not()?;
        if !self.at_keyword("AND") {
            return Ok(first);
        }
        let mut depth = first.depth;
        let mut operands = vec![first.expr];
        while self.eat_keyword("AND") {
            let next = self.not()?;
            depth = depth.max(next.depth);
            operands.push(next.expr);
        }
        self.node(Expr::And(operands), depth)
    }

    fn not(&mut self) -> Result<Node, QueryError> {
        if !self.eat_keyword("NOT") {
            return self.comparison();
        }
        self.enter()?;
        let operand = self.not()?;
        self.leave();
        self.node(Expr::Not(Box::new(operand.expr)), operand.depth)
    }

    fn comparison(&mut self) -> Result<Node, QueryError> {
        let left = self.additive()?;
        let op = match self.peek().kind {
            TokenKind::Eq => Some(CompareOp::Eq),
            TokenKind::Ne => Some(CompareOp::Ne),
            TokenKind::Lt => Some(CompareOp::Lt),
            TokenKind::Le => Some(CompareOp::Le),
            TokenKind::Gt => Some(CompareOp::Gt),
            TokenKind::Ge => Some(CompareOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.index += 1;
            let right = self.additive()?;
            let depth = left.depth.max(right.depth);
            let expr = Expr::Compare {
                op,
                left: Box::new(left.expr),
                right: Box::new(right.expr),
            };
            return self.node(expr, depth);
        }
        let negated = if self.eat_keyword("IN") {
            false
        } else if self.eat_keyword("NIN") {
            true
        } else {
            return Ok(left);
        };
        self.expect(&TokenKind::LBracket, "'[' (IN and NIN take a [list])")?;
        let mut depth = left.depth;
        let mut list = Vec::new();
        loop {
            let element = self.additive()?;
            depth = depth.max(element.depth);
            list.push(element.expr);
            if !self.eat(&TokenKind::Comma) {
                break;
            }
        }
        self.expect(&TokenKind::RBracket, "',' or ']'")?;
        let expr = Expr::In {
            value: Box::new(left.expr),
            list,
            negated,
        };
        self.node(expr, depth)
    }

    fn additive(&mut self) -> Result<Node, QueryError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek().kind {
                TokenKind::Plus => ArithmeticOp::Add,
                TokenKind::Minus => ArithmeticOp::Sub,
                _ => return Ok(left),
            };
            self.index += 1;
            let right = self.multiplicative()?;
            left = self.arithmetic(op, left, right)?;
        }
    }

    fn multiplicative(&mut self) -> Result<Node, QueryError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek().kind {
                TokenKind::Star => ArithmeticOp::Mul,
                TokenKind::Slash => ArithmeticOp::Div,
                TokenKind::Percent => ArithmeticOp::Rem,
                _ => return Ok(left),
            };
            self.index += 1;
            let right = self.unary()?;
            left = self.arithmetic(op, left, right)?;
        }
    }

    fn arithmetic(&self, op: ArithmeticOp, left: Node, right: Node) -> Result<Node, QueryError> {
        let depth = left.depth.max(right.depth);
        let expr = Expr::Arithmetic {
            op,
            left: Box::new(left.expr),
            right: Box::new(right.expr),
        };
        self.node(expr, depth)
    }

    fn unary(&mut self) -> Result<Node, QueryError> {
        if !self.eat(&TokenKind::Minus) {
            return self.primary();
        }
        // `-5` is the constant -5 (so `x > -5` is a plain comparison with a constant).
        if let TokenKind::Number(n) = self.peek().kind {
            self.index += 1;
            return Ok(Node::leaf(Expr::Literal(Literal::Number(-n))));
        }
        self.enter()?;
        let operand = self.unary()?;
        self.leave();
        self.node(Expr::Neg(Box::new(operand.expr)), operand.depth)
    }

    fn primary(&mut self) -> Result<Node, QueryError> {
        let token = self.peek().clone();
        match &token.kind {
            TokenKind::Number(n) => {
                self.index += 1;
                Ok(Node::leaf(Expr::Literal(Literal::Number(*n))))
            }
            TokenKind::Str(s) => {
                self.index += 1;
                Ok(Node::leaf(Expr::Literal(Literal::String(s.clone()))))
            }
            TokenKind::LParen => {
                self.index += 1;
                let inner = self.expr()?;
                self.expect(&TokenKind::RParen, "')'")?;
                Ok(inner)
            }
            TokenKind::Quoted(_) => self.path().map(|p| Node::leaf(Expr::Path(p))),
            TokenKind::Ident(word) => {
                let literal = match word.to_ascii_lowercase().as_str() {
                    "true" => Some(Literal::Bool(true)),
                    "false" => Some(Literal::Bool(false)),
                    "null" => Some(Literal::Null),
                    "undefined" => Some(Literal::Undefined),
                    _ => None,
                };
                if let Some(literal) = literal {
                    self.index += 1;
                    return Ok(Node::leaf(Expr::Literal(literal)));
                }
                if is_keyword(word) {
                    return Err(self.expected("an expression"));
                }
                if matches!(self.peek_kind_at(1), TokenKind::LParen) {
                    return self.call(&token, word);
                }
                self.path().map(|p| Node::leaf(Expr::Path(p)))
            }
            _ => Err(self.expected("an expression")),
        }
    }

    fn call(&mut self, name_token: &Token, name: &str) -> Result<Node, QueryError> {
        let at = name_token.position;
        let upper = name.to_ascii_uppercase();
        if matches!(upper.as_str(), "COUNT" | "SUM" | "AVG" | "MIN" | "MAX") {
            return Err(QueryError::syntax(
                at,
                format!("aggregate {upper} is only allowed as a whole item of the select list"),
            ));
        }
        let Some(function) = Function::from_name(name) else {
            let hint = match upper.as_str() {
                "STARTS_WITH" => " (twin queries spell it STARTSWITH)",
                "ENDS_WITH" => " (twin queries spell it ENDSWITH)",
                _ => "",
            };
            return Err(QueryError::syntax(
                at,
                format!("unknown function '{name}'{hint}"),
            ));
        };
        self.index += 2; // name and '('
        self.enter()?;
        let mut args = Vec::new();
        let mut depth = 0;
        if !self.eat(&TokenKind::RParen) {
            loop {
                let arg = self.expr()?;
                depth = depth.max(arg.depth);
                args.push(arg.expr);
                if !self.eat(&TokenKind::Comma) {
                    break;
                }
            }
            self.expect(&TokenKind::RParen, "',' or ')'")?;
        }
        self.leave();
        let (min, max) = function.arity();
        if args.len() < min || max.is_some_and(|max| args.len() > max) {
            let wanted = match max {
                Some(max) if max == min => format!("{min}"),
                Some(max) => format!("{min} to {max}"),
                None => format!("at least {min}"),
            };
            return Err(QueryError::syntax(
                at,
                format!(
                    "{} takes {wanted} argument(s), found {}",
                    function.name(),
                    args.len()
                ),
            ));
        }
        self.node(Expr::Call { function, args }, depth)
    }

    /// `segment { . segment }`, dropping a leading collection name (`devices.`,
    /// `devices.modules.`, `devices.jobs.`) written unquoted.
    fn path(&mut self) -> Result<Path, QueryError> {
        let mut segments = vec![self.segment()?];
        while self.eat(&TokenKind::Dot) {
            segments.push(self.segment()?);
        }
        let mut start = 0;
        let bare = |s: &(Segment, bool), word: &str| !s.1 && s.0.folded() == word;
        if segments.len() > 1 && segments.first().is_some_and(|s| bare(s, "devices")) {
            start = 1;
            let sub = match self.collection {
                Collection::Devices => None,
                Collection::Modules => Some("modules"),
                Collection::Jobs => Some("jobs"),
            };
            if let Some(sub) = sub {
                if segments.len() > 2 && segments.get(1).is_some_and(|s| bare(s, sub)) {
                    start = 2;
                }
            }
        }
        let kept = segments.into_iter().skip(start).map(|(s, _)| s).collect();
        Ok(Path::from_segments(kept))
    }

    /// One segment and whether it was `[[quoted]]`.
    fn segment(&mut self) -> Result<(Segment, bool), QueryError> {
        let token = self.peek().clone();
        match token.kind {
            TokenKind::Quoted(name) => {
                self.index += 1;
                Ok((Segment::new(name), true))
            }
            TokenKind::Ident(name) if is_keyword(&name) => Err(QueryError::syntax(
                token.position,
                format!(
                    "expected a property name, found reserved word '{name}' (quote it as [[{name}]])"
                ),
            )),
            TokenKind::Ident(name) => {
                self.index += 1;
                Ok((Segment::new(name), false))
            }
            _ => Err(self.expected("a property name")),
        }
    }
}

/// Rules on top of the grammar (spec §5, §6.2, §7.8). Also applied by the executor, so a
/// hand-built [`Query`] cannot reach states the evaluator does not define.
pub(crate) fn validate(query: &Query) -> Result<(), QueryError> {
    let items: &[SelectItem] = match &query.select {
        Select::All => &[],
        Select::Items(items) => items,
    };
    if query.collection == Collection::Jobs
        && (!matches!(query.select, Select::All) || query.group_by.is_some())
    {
        return Err(QueryError::Invalid(
            "devices.jobs supports only SELECT * (no projection, aggregate or GROUP BY)".into(),
        ));
    }
    if let Select::Items(items) = &query.select {
        if items.is_empty() {
            return Err(QueryError::Invalid("the select list is empty".into()));
        }
    }
    let has_aggregate = items
        .iter()
        .any(|i| matches!(i.value, Projection::Aggregate(_)));
    match &query.group_by {
        Some(group) => {
            if matches!(query.select, Select::All) {
                return Err(QueryError::Invalid(
                    "GROUP BY needs a select list of the grouped property and aggregates, not *"
                        .into(),
                ));
            }
            for item in items {
                if let Projection::Expr(expr) = &item.value {
                    if !matches!(expr, Expr::Path(p) if p.same_property(group)) {
                        return Err(QueryError::Invalid(format!(
                            "select item '{expr}' must be the GROUP BY property ({group}) or an aggregate"
                        )));
                    }
                }
            }
        }
        None if has_aggregate => {
            for item in items {
                if let Projection::Expr(expr) = &item.value {
                    return Err(QueryError::Invalid(format!(
                        "select item '{expr}' must be an aggregate: without GROUP BY a query cannot mix aggregates and plain values"
                    )));
                }
            }
        }
        None => {}
    }
    Ok(())
}
