"""The demo catalogue: workshops in real towns of the province of Jaén and their products.

Pure data and a deterministic generator, so tests, the benchmark and `make run` see the same
vocabulary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DemoArtisan:
    """A workshop."""

    key: str
    name: str
    craft: str
    town: str
    latitude: float
    longitude: float
    bio: str


@dataclass(frozen=True, slots=True)
class DemoProduct:
    """A product of a workshop."""

    key: str
    artisan_key: str
    name: str
    description: str
    category: str
    price_cents: int
    stock: int
    low_stock_threshold: int
    return_exception: str = ""  # services/platform/return_exceptions.py: a fresh cheese is PERISHABLE


ARTISANS = [
    DemoArtisan("almazara-ubeda", "Almazara La Loma", "aceite", "Úbeda", 38.0133, -3.3706, "Aceite de oliva virgen extra de picual desde 1920."),
    DemoArtisan("alfareria-tito", "Alfarería Tito", "ceramica", "Úbeda", 38.0112, -3.3650, "Cerámica verde vidriada de Úbeda, hecha a torno."),
    DemoArtisan("ceramica-paco", "Cerámica Paco Tito", "ceramica", "Úbeda", 38.0150, -3.3690, "Loza tradicional con esmalte de plomo y cobre."),
    DemoArtisan("aceites-baeza", "Aceites Puerta de Baeza", "aceite", "Baeza", 37.9938, -3.4700, "Cooperativa de olivareros de la campiña de Baeza."),
    DemoArtisan("esparto-jaen", "Esparteros del Santo Reino", "esparto", "Jaén", 37.7796, -3.7849, "Cestería y pleita de esparto trenzado a mano."),
    DemoArtisan("quesos-cazorla", "Quesería Sierra de Cazorla", "queso", "Cazorla", 37.9148, -3.0030, "Quesos de cabra y oveja de la sierra."),
    DemoArtisan("miel-cazorla", "Mieles del Parque", "miel", "Cazorla", 37.9120, -3.0010, "Miel de romero y de montaña del Parque Natural."),
    DemoArtisan("andujar-ceramica", "Cerámica de Andújar", "ceramica", "Andújar", 38.0392, -4.0510, "Jarras y botijos de Andújar con decoración azul."),
    DemoArtisan("linares-forja", "Forja Linares", "forja", "Linares", 38.0953, -3.6360, "Hierro forjado a mano: faroles, rejas y herrajes."),
    DemoArtisan("martos-aceite", "Oleo Martos", "aceite", "Martos", 37.7210, -3.9720, "Aceite temprano de la ciudad de la Peña."),
    DemoArtisan("alcala-vino", "Bodega Alcalá la Real", "vino", "Alcalá la Real", 37.4610, -3.9230, "Vinos de la Sierra Sur de Jaén."),
    DemoArtisan("torredonjimeno-dulces", "Dulces de Torredonjimeno", "dulces", "Torredonjimeno", 37.7670, -3.9570, "Roscos, ochíos y pestiños de receta familiar."),
    DemoArtisan("bailen-barro", "Barro de Bailén", "ceramica", "Bailén", 38.0930, -3.7770, "Ladrillo y barro cocido de los hornos de Bailén."),
    DemoArtisan("la-carolina-cuero", "Guarnicionería La Carolina", "cuero", "La Carolina", 38.2760, -3.6150, "Cinturones, bolsos y arreos de cuero curtido."),
    DemoArtisan("villacarrillo-aceite", "Almazara Villacarrillo", "aceite", "Villacarrillo", 38.1150, -3.0850, "Aceite ecológico de la comarca de Las Villas."),
    DemoArtisan("segura-miel", "Colmenas de Segura", "miel", "Segura de la Sierra", 38.2970, -2.6500, "Miel de tomillo y de brezo de la Sierra de Segura."),
    DemoArtisan("quesada-madera", "Tallas Quesada", "madera", "Quesada", 37.8450, -3.0690, "Madera de olivo tallada: tablas, cucharas y cuencos."),
    DemoArtisan("alcaudete-dulces", "Confitería Alcaudete", "dulces", "Alcaudete", 37.5910, -4.0830, "Mantecados y dulces de almendra de Alcaudete."),
    DemoArtisan("huelma-queso", "Quesos Sierra Mágina", "queso", "Huelma", 37.6470, -3.4550, "Queso curado de oveja de Sierra Mágina."),
    DemoArtisan("jodar-esparto", "Esparto de Jódar", "esparto", "Jódar", 37.8400, -3.3520, "Alfombras y cestos de esparto picado."),
    DemoArtisan("mancha-real-textil", "Telares Mancha Real", "textil", "Mancha Real", 37.7870, -3.6110, "Jarapas y mantas tejidas en telar de pedal."),
    DemoArtisan("castellar-aceite", "Almazara Castellar", "aceite", "Castellar", 38.2540, -3.1300, "Aceite de arbequina y picual de Castellar."),
    DemoArtisan("sabiote-forja", "Herrería Sabiote", "forja", "Sabiote", 38.0700, -3.3140, "Forja artística para casas de piedra."),
    DemoArtisan("porcuna-piedra", "Canteros de Porcuna", "piedra", "Porcuna", 37.8690, -4.1840, "Piedra de Porcuna labrada a mano."),
]  # fmt: skip

# For each craft: (name, description, category, price in cents) templates; {v} is a variant.
TEMPLATES: dict[str, list[tuple[str, str, int]]] = {
    "aceite": [
        (
            "Aceite de oliva virgen extra picual {v}",
            "Aceite de oliva virgen extra de variedad picual, cosecha temprana, frutado intenso con notas de tomatera y hierba recién cortada.",
            1250,
        ),
        (
            "Aceite de oliva virgen extra ecológico {v}",
            "Aceite ecológico certificado, molturado en frío a menos de 27 grados en nuestra almazara.",
            1490,
        ),
        (
            "Aceite de oliva virgen arbequina {v}",
            "Aceite suave y afrutado de aceitunas arbequinas, ideal para repostería y ensaladas.",
            990,
        ),
        (
            "Lata de aceite virgen extra {v}",
            "Lata serigrafiada que protege el aceite de la luz; perfecta para regalo.",
            1890,
        ),
        (
            "Estuche de aceites monovarietales {v}",
            "Tres botellas de picual, arbequina y royal para catar las diferencias.",
            2450,
        ),
        (
            "Aceitunas aliñadas caseras {v}",
            "Aceitunas partidas aliñadas con tomillo, ajo e hinojo, receta de la abuela.",
            450,
        ),
        ("Paté de aceitunas negras {v}", "Crema de aceitunas negras con aceite de oliva virgen extra.", 390),
        (
            "Jabón artesano de aceite de oliva {v}",
            "Jabón natural de aceite de oliva, sin perfumes, hecho a mano.",
            350,
        ),
    ],
    "ceramica": [
        (
            "Plato de cerámica verde de Úbeda {v}",
            "Plato de loza vidriada en verde cobre, decorado a mano con motivos tradicionales.",
            2200,
        ),
        (
            "Cuenco de cerámica vidriada {v}",
            "Cuenco hecho a torno, esmaltado en verde o melado, apto para alimentos.",
            1500,
        ),
        (
            "Jarra de barro decorada {v}",
            "Jarra de agua de barro cocido con decoración en azul cobalto.",
            2800,
        ),
        (
            "Botijo tradicional de barro {v}",
            "Botijo que enfría el agua por evaporación, cocido en horno de leña.",
            1900,
        ),
        ("Lebrillo de cerámica {v}", "Lebrillo grande para gazpacho y masas, vidriado por dentro.", 3500),
        (
            "Azulejo pintado a mano {v}",
            "Azulejo artesanal con motivos mudéjares, pintado pieza a pieza.",
            900,
        ),
        ("Juego de tazas de cerámica {v}", "Cuatro tazas de loza vidriada con asa, hechas a torno.", 3200),
        ("Maceta de barro cocido {v}", "Maceta de barro de Bailén, porosa y resistente a las heladas.", 1100),
    ],
    "esparto": [
        (
            "Cesta de esparto trenzado {v}",
            "Cesta de pleita de esparto cosida a mano, resistente y ligera.",
            2500,
        ),
        ("Alfombra de esparto {v}", "Alfombra de esparto picado, fresca en verano y natural.", 4500),
        ("Capazo de esparto con asas {v}", "Capazo para la compra o la playa con asas de cuero.", 3200),
        ("Salvamanteles de esparto {v}", "Juego de salvamanteles redondos de esparto crudo.", 1200),
        ("Persiana de esparto {v}", "Persiana enrollable de esparto para patios y ventanas.", 5500),
        ("Cesto de esparto para el pan {v}", "Panera de esparto trenzado con tapa.", 1800),
    ],
    "queso": [
        ("Queso de cabra curado {v}", "Queso de leche cruda de cabra, curado seis meses en cueva.", 1650),
        (
            "Queso de oveja en aceite {v}",
            "Queso de oveja semicurado conservado en aceite de oliva virgen extra.",
            1950,
        ),
        ("Queso fresco de cabra {v}", "Queso fresco de cabra, suave y cremoso, de elaboración diaria.", 650),
        ("Queso de cabra con romero {v}", "Queso de cabra con corteza de romero de la sierra.", 1750),
        (
            "Tabla de quesos de la sierra {v}",
            "Selección de tres quesos de cabra y oveja de Cazorla y Mágina.",
            2900,
        ),
    ],
    "miel": [
        ("Miel de romero {v}", "Miel cruda de romero, clara y floral, sin pasteurizar.", 850),
        ("Miel de montaña {v}", "Miel oscura de montaña de la Sierra de Segura, intensa y aromática.", 950),
        ("Miel de tomillo {v}", "Miel de tomillo con notas balsámicas, cosecha de verano.", 1050),
        ("Polen de abeja {v}", "Polen fresco recogido en el Parque Natural.", 700),
        ("Vela de cera de abeja {v}", "Vela natural de cera de nuestras colmenas.", 600),
    ],
    "forja": [
        ("Farol de hierro forjado {v}", "Farol de forja artesanal con cristal, para pared o colgar.", 6500),
        ("Aldaba de forja {v}", "Aldaba de hierro forjado a mano para puertas de madera.", 3800),
        ("Perchero de hierro forjado {v}", "Perchero de pared con cinco ganchos de forja.", 4200),
        ("Candelabro de forja {v}", "Candelabro de hierro negro para tres velas.", 3500),
    ],
    "vino": [
        ("Vino tinto de la Sierra Sur {v}", "Tinto de tempranillo y syrah con doce meses en barrica.", 1350),
        ("Vino blanco joven {v}", "Blanco afrutado de uvas de la Sierra Sur de Jaén.", 950),
        ("Vino dulce de pasas {v}", "Vino dulce de uvas pasificadas al sol.", 1650),
    ],
    "dulces": [
        ("Roscos de vino caseros {v}", "Roscos de vino y anís horneados con aceite de oliva.", 550),
        ("Ochíos de Jaén {v}", "Bollos tradicionales de aceite con pimentón y sal por encima.", 450),
        ("Pestiños con miel {v}", "Pestiños fritos en aceite de oliva y bañados en miel.", 650),
        ("Mantecados de almendra {v}", "Mantecados artesanos de almendra y canela.", 750),
        ("Hojaldrinas de naranja {v}", "Hojaldrinas con ralladura de naranja, receta familiar.", 700),
    ],
    "cuero": [
        (
            "Cinturón de cuero curtido {v}",
            "Cinturón de cuero de vaca curtido al vegetal y cosido a mano.",
            3900,
        ),
        ("Bolso de cuero artesanal {v}", "Bolso bandolera de cuero con hebilla de latón.", 8900),
        ("Cartera de cuero {v}", "Cartera de bolsillo de piel, cosida a punto de silla.", 2900),
    ],
    "madera": [
        (
            "Tabla de cortar de madera de olivo {v}",
            "Tabla maciza de madera de olivo, tratada con aceite.",
            3200,
        ),
        ("Cuchara de madera de olivo {v}", "Cuchara tallada a mano en madera de olivo.", 900),
        ("Cuenco de madera de olivo {v}", "Cuenco torneado en una pieza de olivo centenario.", 2800),
    ],
    "textil": [
        ("Jarapa de colores {v}", "Jarapa tejida en telar con tiras de algodón reciclado.", 4800),
        ("Manta de lana tejida {v}", "Manta de lana merina tejida en telar de pedal.", 7900),
        ("Cojín de telar {v}", "Funda de cojín tejida a mano con dibujo de rombos.", 2200),
    ],
    "piedra": [
        ("Mortero de piedra {v}", "Mortero de piedra de Porcuna labrado a mano, con mano de madera.", 3900),
        ("Fuente de piedra labrada {v}", "Pequeña fuente de jardín en piedra arenisca.", 24900),
    ],
}
VARIANTS = ["", "500 ml", "1 litro", "pequeño", "grande", "edición limitada", "de regalo", "familiar"]


def products(count: int = 240, seed: int = 2026) -> list[DemoProduct]:
    """`count` products spread over the workshops, from their crafts' templates; deterministic."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    by_craft: dict[str, list[DemoArtisan]] = {}
    for artisan in ARTISANS:
        by_craft.setdefault(artisan.craft, []).append(artisan)
    crafts = sorted(by_craft)
    made: list[DemoProduct] = []
    i = 0
    while len(made) < count:
        craft = crafts[i % len(crafts)]
        artisan = by_craft[craft][(i // len(crafts)) % len(by_craft[craft])]
        name, description, price = TEMPLATES[craft][(i // len(crafts)) % len(TEMPLATES[craft])]
        variant = VARIANTS[(i // (len(crafts) * 3)) % len(VARIANTS)]
        made.append(
            DemoProduct(
                key=f"{artisan.key}-{i:06d}",
                artisan_key=artisan.key,
                name=name.format(v=variant).strip(),
                description=description,
                category=craft,
                price_cents=price + rng.randrange(0, 5) * 50,
                stock=rng.choice([0, 2, 5, 8, 12, 20, 35, 50]),
                low_stock_threshold=3,
                return_exception="PERISHABLE" if name.startswith("Queso fresco") else "",
            )
        )
        i += 1
    return made
