//! What the OpenAPI documents (src/openapi/) need to know of a kind beyond its typed model: the
//! schema of each kind comes from its `k8s-openapi` struct (`schemars`), and the list semantics
//! upstream declares with Go struct tags (`patchStrategy`, `patchMergeKey`, `+listType`,
//! `+listMapKey`) are tabled here per definition, because the generated schemas lack them. The
//! same table can drive strategic merge and managed fields.

use schemars::JsonSchema;
use schemars::r#gen::SchemaGenerator;

/// Registers a kind's schema (and everything it references) in `generator`; returns the
/// definition name (`io.k8s.api.core.v1.Node`).
pub type SchemaFn = fn(&mut SchemaGenerator) -> String;

/// [`SchemaFn`] of the typed model `T`.
pub fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name()
}

/// How a list field merges (`x-kubernetes-list-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// Unique scalar values, merged as a set.
    Set,
    /// Objects merged by the values of these keys (`x-kubernetes-list-map-keys`).
    Map(&'static [&'static str]),
}

impl ListType {
    /// The `x-kubernetes-list-type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ListType::Atomic => "atomic",
            ListType::Set => "set",
            ListType::Map(_) => "map",
        }
    }
}

/// The merge semantics of one list-valued property of one definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListSemantics {
    /// Definition name (`io.k8s.api.core.v1.PodSpec`).
    pub definition: &'static str,
    /// Property name (`containers`).
    pub field: &'static str,
    pub list_type: ListType,
    /// `x-kubernetes-patch-strategy` (`merge`, `merge,retainKeys`), when upstream declares one.
    pub patch_strategy: Option<&'static str>,
    /// `x-kubernetes-patch-merge-key`, when upstream declares one.
    pub merge_key: Option<&'static str>,
}

/// A list replaced as a whole.
pub const fn atomic(definition: &'static str, field: &'static str) -> ListSemantics {
    ListSemantics {
        definition,
        field,
        list_type: ListType::Atomic,
        patch_strategy: None,
        merge_key: None,
    }
}

/// A list of objects keyed by `keys`, strategic-merged by `merge_key` with `strategy`.
pub const fn keyed(
    definition: &'static str,
    field: &'static str,
    keys: &'static [&'static str],
    merge_key: &'static str,
    strategy: &'static str,
) -> ListSemantics {
    ListSemantics {
        definition,
        field,
        list_type: ListType::Map(keys),
        patch_strategy: Some(strategy),
        merge_key: Some(merge_key),
    }
}

/// A set of scalars, strategic-merged (`patchStrategy:"merge"`) when `merge` is true.
pub const fn set(definition: &'static str, field: &'static str, merge: bool) -> ListSemantics {
    ListSemantics {
        definition,
        field,
        list_type: ListType::Set,
        patch_strategy: if merge { Some("merge") } else { None },
        merge_key: None,
    }
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// Lists of the definitions every kind shares (metadata, Status).
pub const COMMON_LISTS: &[ListSemantics] = &[
    set(OBJECT_META, "finalizers", true),
    keyed(OBJECT_META, "ownerReferences", &["uid"], "uid", "merge"),
    atomic(OBJECT_META, "managedFields"),
    atomic(
        "io.k8s.apimachinery.pkg.apis.meta.v1.StatusDetails",
        "causes",
    ),
    atomic(
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "dryRun",
    ),
];

/// Conditions lists: merged by `type` (`patchMergeKey:"type"`, `+listMapKey=type`).
pub const fn conditions(definition: &'static str) -> ListSemantics {
    keyed(definition, "conditions", &["type"], "type", "merge")
}
