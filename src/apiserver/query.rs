//! Query parameters as upstream's parameter codec reads them (`url.Values` converted by
//! apimachinery's `Convert_Slice_string_To_*`): every key may repeat and keeps all its values,
//! scalars take the first value, booleans are false only for `0` and `false` in any letter case
//! (so `watch`, `watch=`, `watch=1`, `watch=True` and `watch=TRUE` are all watches: Debian's
//! python3-kubernetes sends `watch=True`), integers are decimal `int64`. A value that does not
//! parse is a 400 naming the parameter. `dryRun` takes only `All` (upstream's
//! `ValidateDryRun`, a 422 on the request's options kind).

use std::collections::HashMap;

use super::status::{ApiError, FieldCause};

/// The decoded query string of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    values: HashMap<String, Vec<String>>,
}

impl Query {
    /// Adds one `key=value` pair (a repeated key keeps every value, in order).
    pub fn push(&mut self, key: String, value: String) {
        self.values.entry(key).or_default().push(value);
    }

    /// The first value of `key`, as upstream's scalar conversions read a repeated key.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.values.get(key).and_then(|v| v.first())
    }

    /// Every value of `key`, in request order.
    pub fn all(&self, key: &str) -> &[String] {
        self.values.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// A boolean parameter: absent is false; present is true unless its first value is `0` or
    /// `false` in any case (upstream `Convert_Slice_string_To_bool`).
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
    }

    /// An integer parameter (first value; an empty value counts as absent, as kubectl sends
    /// `limit=` never but other clients do). 400 naming the parameter when it is not an
    /// `int64`.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::BadRequest(format!(
                    "invalid value {v:?} for query parameter {key:?}: not an integer"
                ))
            }),
        }
    }

    /// An integer parameter that may not be negative (`limit`, `timeoutSeconds`).
    pub fn non_negative(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.int(key)? {
            Some(n) if n < 0 => Err(ApiError::BadRequest(format!(
                "invalid value \"{n}\" for query parameter {key:?}: must not be negative"
            ))),
            other => Ok(other),
        }
    }

    /// Whether the request asks for a dry run (see [`dry_run_values`]).
    pub fn dry_run(&self, options_kind: &str) -> Result<bool, ApiError> {
        dry_run_values(self.all("dryRun"), options_kind)
    }
}

/// Whether `dryRun` values (from the query, or a `DeleteOptions` body) ask for a dry run. Each
/// must be `All`: anything else is upstream's 422 on `options_kind` (e.g. `CreateOptions`).
pub fn dry_run_values(values: &[String], options_kind: &str) -> Result<bool, ApiError> {
    let causes: Vec<FieldCause> = values
        .iter()
        .filter(|v| v.as_str() != "All")
        .map(|v| FieldCause {
            field: "dryRun".into(),
            message: format!("Unsupported value: {v:?}: supported values: \"All\""),
        })
        .collect();
    if !causes.is_empty() {
        return Err(ApiError::Invalid {
            kind: format!("{options_kind}.meta.k8s.io"),
            name: String::new(),
            causes,
        });
    }
    Ok(!values.is_empty())
}

impl std::ops::Index<&str> for Query {
    type Output = String;

    /// The first value of `key`; panics when it is absent (tests only).
    fn index(&self, key: &str) -> &String {
        self.get(key)
            .unwrap_or_else(|| panic!("query parameter {key:?} is absent"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::query_map;

    #[test]
    fn booleans_read_like_upstream() {
        // Every Go ParseBool "true" spelling, Python's `True`, and a bare key are true.
        for q in [
            "watch",
            "watch=",
            "watch=1",
            "watch=t",
            "watch=T",
            "watch=true",
            "watch=True",
            "watch=TRUE",
        ] {
            assert!(query_map(Some(q)).unwrap().flag("watch"), "{q}");
        }
        for q in [
            "watch=0",
            "watch=false",
            "watch=False",
            "watch=FALSE",
            "x=1",
        ] {
            assert!(!query_map(Some(q)).unwrap().flag("watch"), "{q}");
        }
    }

    #[test]
    fn repeated_keys_keep_every_value_and_scalars_take_the_first() {
        let q = query_map(Some(
            "limit=5&limit=7&dryRun=All&dryRun=All&watch=0&watch=1",
        ))
        .unwrap();
        assert_eq!(q.int("limit").unwrap(), Some(5));
        assert_eq!(q.all("limit"), ["5", "7"]);
        assert!(!q.flag("watch"));
        assert!(q.dry_run("CreateOptions").unwrap());
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let e = query_map(Some("limit=ten"))
            .unwrap()
            .int("limit")
            .unwrap_err();
        assert_eq!(e.code(), 400);
        assert!(e.to_string().contains("\"limit\""), "{e}");
        let e = query_map(Some("timeoutSeconds=-1"))
            .unwrap()
            .non_negative("timeoutSeconds")
            .unwrap_err();
        assert!(e.to_string().contains("timeoutSeconds"), "{e}");
        let e = query_map(Some("dryRun=All&dryRun=Yes"))
            .unwrap()
            .dry_run("PatchOptions")
            .unwrap_err();
        assert_eq!(e.code(), 422);
        assert_eq!(
            e.to_string(),
            "PatchOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: \"Yes\": supported values: \"All\""
        );
        assert!(!query_map(None).unwrap().dry_run("CreateOptions").unwrap());
    }
}
