//! FHIRPath (placeholder until the engine lands).
pub mod patch {
    //! FHIRPath Patch (placeholder).
    use serde_json::Value;
    pub struct PatchError {
        pub message: String,
        pub operation: Option<String>,
    }
    pub fn apply_fhirpath_patch(
        _resource: &mut Value,
        _params: &Value,
        _is_list: &dyn Fn(&[&str]) -> Option<bool>,
    ) -> Result<(), PatchError> {
        Err(PatchError {
            message: "FHIRPath Patch is not available yet".into(),
            operation: None,
        })
    }
}
