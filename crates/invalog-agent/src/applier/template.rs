//! Redis key templates: `content:{id}`, `product:{uuid}`, `page:{key}`.
//! A template holds one kind of placeholder (as often as needed) and
//! literal text, where `{{` and `}}` stand for braces. `{id}` renders
//! integer ids, `{uuid}` UUIDs (lowercase, hyphenated), `{key}` string keys;
//! a template is only rendered for instructions of its kind. The checks are
//! public so configuration validates templates exactly as the applier
//! parses them.

/// Checks a key template; the error says what is wrong.
pub fn check_key_template(template: &str) -> Result<(), String> {
    Template::parse(template).map(|_| ())
}

/// The SCAN pattern matching every key `template` renders (each placeholder
/// becomes `*`; `*`, `?`, `[`, `]` and `\` of the literals are escaped):
/// the default refresh-all patterns of a `redis` applier.
pub fn key_template_pattern(template: &str) -> Result<String, String> {
    Template::parse(template).map(|t| t.pattern())
}

/// Which values a template takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placeholder {
    /// `{id}`: integer ids.
    Id,
    /// `{uuid}`: UUIDs, lowercase with hyphens.
    Uuid,
    /// `{key}`: string keys.
    Key,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Value,
}

/// A parsed key template: literals and one kind of placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Template {
    pub(super) placeholder: Placeholder,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `content:{id}`; `{{` and `}}` are literal braces.
    pub(super) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut placeholder = None;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!(
                            "template `{text}` has a lone `{{` (write `{{{{` for a brace)"
                        ));
                    }
                    let found = match name.as_str() {
                        "id" => Placeholder::Id,
                        "uuid" => Placeholder::Uuid,
                        "key" => Placeholder::Key,
                        _ => {
                            return Err(format!(
                                "template `{text}` has an unknown placeholder `{{{name}` \
                                 (use {{id}}, {{uuid}} or {{key}}; write {{{{ and }}}} for braces)"
                            ))
                        }
                    };
                    if placeholder.is_some_and(|p| p != found) {
                        return Err(format!(
                            "template `{text}` mixes placeholders; use one of {{id}}, {{uuid}}, {{key}}"
                        ));
                    }
                    placeholder = Some(found);
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                    parts.push(Part::Value);
                }
                '}' => {
                    return Err(format!(
                        "template `{text}` has a lone `}}` (write `}}}}` for a brace)"
                    ))
                }
                c => literal.push(c),
            }
        }
        parts.push(Part::Literal(literal));
        parts.retain(|p| *p != Part::Literal(String::new()));
        let placeholder = placeholder.ok_or_else(|| {
            format!("template `{text}` has no placeholder; use {{id}}, {{uuid}} or {{key}}")
        })?;
        Ok(Template { placeholder, parts })
    }

    /// The SCAN pattern matching every key this template renders: each
    /// placeholder becomes `*`, glob characters of the literals are escaped.
    pub(super) fn pattern(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(text) => text
                    .chars()
                    .flat_map(|c| match c {
                        '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                        c => vec![c],
                    })
                    .collect(),
                Part::Value => "*".to_owned(),
            })
            .collect()
    }

    pub(super) fn render(&self, value: &str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(text) => text.as_str(),
                Part::Value => value,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_their_placeholder() {
        let t = Template::parse("content:{id}").unwrap();
        assert_eq!(t.placeholder, Placeholder::Id);
        assert_eq!(t.render("42"), "content:42");
        let t = Template::parse("{{tenant}}:page:{key}:{key}").unwrap();
        assert_eq!(t.placeholder, Placeholder::Key);
        assert_eq!(t.render("/en/"), "{tenant}:page:/en/:/en/");
        assert_eq!(
            Template::parse("p:{uuid}").unwrap().placeholder,
            Placeholder::Uuid
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["content", "content:{name}", "{id}:{key}", "a}b", "a{id", ""] {
            assert!(check_key_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_become_scan_patterns() {
        assert_eq!(key_template_pattern("content:{id}").unwrap(), "content:*");
        assert_eq!(
            key_template_pattern("page:{key}:html").unwrap(),
            "page:*:html"
        );
        assert_eq!(
            key_template_pattern("odd*[x]:{uuid}").unwrap(),
            "odd\\*\\[x\\]:*"
        );
        assert_eq!(key_template_pattern("{{t}}:{id}").unwrap(), "{t}:*");
    }
}
