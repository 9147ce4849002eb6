// Swagger UI over the server's own schema, from the local copy: an external file because the
// page's Content-Security-Policy allows no inline script.
window.SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null, // the default validator badge would load an image from another site
});
