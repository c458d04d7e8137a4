// Package verify is the deploy gate that lets only images signed by the
// expected workflow replace what runs. It finds an image's Sigstore
// signatures in its registry (package registry: OCI 1.1 referrers, the
// referrers tag index, cosign's legacy .sig tag), verifies them in-process
// with sigstore-go against a trusted root (Sigstore's public-good instance
// through TUF, or one pinned in a file), and checks that one of them was
// made by the identity expected for the target: by default a GitHub
// Actions workflow of the image's own repository.
//
// The gate runs once the strategy knows the digest it is about to deploy
// and before anything is touched (deployer.Gate). Per target, the labels
// hookd.verify (off, warn, enforce), hookd.verify-identity and
// hookd.verify-issuer override the global settings. With enforce, an image
// that no expected signature covers is refused with a reason a person can
// act on, and its digest is remembered as rejected (deploy.ErrRejected);
// with warn it deploys and the job records the warning. Either way the
// verified identity and commit are kept on the job.
package verify
