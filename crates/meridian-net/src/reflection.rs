//! gRPC server reflection as every Meridian process serves it: both the v1
//! protocol and the older v1alpha one (Python's reflection client,
//! `grpc_cli` and older `grpcurl` speak only v1alpha), each listing exactly
//! the services the process serves — not every service compiled into the
//! descriptor set.

use tonic_reflection::server::{Builder, v1, v1alpha};

/// The reflection services' own names (listed with the rest: they are served).
pub const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Both reflection services for a process serving `services` (fully
/// qualified, e.g. `meridian.v1.Kv`), describing them from `descriptor_sets`.
/// Errors only on a descriptor set that does not decode.
#[allow(clippy::type_complexity)]
pub fn services(
    descriptor_sets: &[&'static [u8]],
    services: &[&str],
) -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    String,
> {
    let builder = || {
        let mut builder = Builder::configure();
        for set in descriptor_sets {
            builder = builder.register_encoded_file_descriptor_set(set);
        }
        for name in services.iter().chain(REFLECTION_SERVICES.iter()) {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| format!("reflection service (v1): {e}"))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| format!("reflection service (v1alpha): {e}"))?;
    Ok((v1, v1alpha))
}
