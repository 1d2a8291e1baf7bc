from decimal import Decimal

from django.db import migrations

PRODUCTS = [
    ("Coffee beans, 1 kg", Decimal("18.50")),
    ("Espresso cup", Decimal("6.00")),
    ("Milk frother", Decimal("39.90")),
]


def seed(apps, schema_editor):
    Product = apps.get_model("shop", "Product")
    Product.objects.bulk_create(Product(name=name, price=price) for name, price in PRODUCTS)


def unseed(apps, schema_editor):
    apps.get_model("shop", "Product").objects.filter(name__in=[n for n, _ in PRODUCTS]).delete()


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
