// Test certificates for the console's HTTPS step, made in Node (no `openssl` CLI needed:
// it is not installed by default on Debian): RSA keys from node:crypto, X.509 from
// node-forge (a devDependency). A CA, and a server certificate it signs for 127.0.0.1,
// ::1 and localhost.

import { createHash, createPublicKey, generateKeyPairSync, randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import forge from "node-forge";

const { pki } = forge;

function rsaKey() {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const pem = privateKey.export({ type: "pkcs8", format: "pem" });
  const forgeKey = pki.privateKeyFromPem(privateKey.export({ type: "pkcs1", format: "pem" }));
  return { pem, forgeKey, publicKey: pki.setRsaPublicKey(forgeKey.n, forgeKey.e) };
}

function newCert(publicKey, subjectCN, issuerCN, extensions) {
  const cert = pki.createCertificate();
  cert.publicKey = publicKey;
  // A positive serial (top bit clear), 16 random bytes.
  const serial = randomBytes(16);
  serial[0] &= 0x7f;
  cert.serialNumber = serial.toString("hex");
  const now = Date.now();
  cert.validity.notBefore = new Date(now - 60 * 60 * 1000);
  cert.validity.notAfter = new Date(now + 24 * 60 * 60 * 1000);
  cert.setSubject([{ name: "commonName", value: subjectCN }]);
  cert.setIssuer([{ name: "commonName", value: issuerCN }]);
  cert.setExtensions(extensions);
  return cert;
}

/** base64(sha256(SubjectPublicKeyInfo DER)): what Chromium's --ignore-certificate-errors-spki-list takes. */
export function spkiHash(certPem) {
  const der = createPublicKey(certPem).export({ type: "spki", format: "der" });
  return createHash("sha256").update(der).digest("base64");
}

/**
 * Writes ca.pem, cert.pem (the server certificate) and key.pem (its PKCS#8 key) into `dir`
 * and returns their paths, the CA and server PEMs, and the server certificate's SPKI hash.
 */
export function makeTestCerts(dir) {
  const caKey = rsaKey();
  const caCN = "mse-grpc console test CA";
  const ca = newCert(caKey.publicKey, caCN, caCN, [
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  ca.sign(caKey.forgeKey, forge.md.sha256.create());

  const srvKey = rsaKey();
  const srv = newCert(srvKey.publicKey, "127.0.0.1", caCN, [
    { name: "basicConstraints", cA: false, critical: true },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: true },
    {
      name: "subjectAltName",
      altNames: [
        { type: 7, ip: "127.0.0.1" },
        { type: 7, ip: "::1" },
        { type: 2, value: "localhost" },
      ],
    },
    { name: "subjectKeyIdentifier" },
    { name: "authorityKeyIdentifier", keyIdentifier: ca.generateSubjectKeyIdentifier().getBytes() },
  ]);
  srv.sign(caKey.forgeKey, forge.md.sha256.create());

  const caPem = pki.certificateToPem(ca);
  const certPem = pki.certificateToPem(srv);
  const paths = { ca: join(dir, "ca.pem"), cert: join(dir, "cert.pem"), key: join(dir, "key.pem") };
  writeFileSync(paths.ca, caPem);
  writeFileSync(paths.cert, certPem);
  writeFileSync(paths.key, srvKey.pem, { mode: 0o600 });
  return { ...paths, caPem, certPem, spki: spkiHash(certPem) };
}
