//! File formats shared by the stages: NumPy `.npy` ([`npy`]), `np.savetxt`-style text and kept
//! lists ([`text`]), insightface RecordIO ([`recordio`]), verification `.bin` packs ([`bin`]) and the
//! IJB-C release files ([`ijb`]). Every reader names the file and the place of a defect.

pub mod bin;
pub mod ijb;
pub mod npy;
pub mod recordio;
pub mod text;
